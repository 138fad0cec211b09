//! Dataset readers for contrastive learning: IDX (MNIST/Fashion-MNIST), CIFAR binary, image folders.
