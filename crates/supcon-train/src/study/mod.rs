//! Studies: many short runs of one recipe that differ in one setting, read together as a
//! figure. Each cell of a study is an ordinary run folder (resumable, with its report), so an
//! interrupted study continues where it stopped.

pub mod augment;
