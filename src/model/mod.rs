//! Face CNNs (ConvNeXt, ResNet, MobileNet) as plain Candle modules with train/eval modes.
