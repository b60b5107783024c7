"""Data for gitune: long-tail profiles, sources (CIFAR, npz, ImageFolder, built-in glyphs), nuisance
transforms, batched on-device augmentation and a device-resident loader. No Ray or MLflow here."""
