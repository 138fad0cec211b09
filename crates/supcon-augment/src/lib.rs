//! Seeded, parallel multi-view image augmentations for contrastive learning.
