//! ResNet encoders, projection heads and linear classifiers on tch (libtorch).
