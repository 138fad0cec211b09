pub mod augment;
