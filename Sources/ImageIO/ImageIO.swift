// Image decoding (libjpeg-turbo, libpng) and the torchvision-exact transforms.
