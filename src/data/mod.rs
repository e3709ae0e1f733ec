//! Course data layout, synthetic face generator, transforms and the batch loader.
