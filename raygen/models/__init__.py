"""Networks, one concept a file: VQ-GAN, discriminator, masked-token decoder, text encoder,
classifier."""
