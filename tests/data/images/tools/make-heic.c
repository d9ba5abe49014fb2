// Encodes a binary PPM (P6, 8-bit) as HEIC with libheif's x265 encoder, optionally
// with an orientation (stored as HEIF `irot`/`imir` transforms, as iPhones do) and
// an ICC profile. heif-enc cannot set an orientation; this is its small cousin for
// making minilab's test photos (see ../make-heic.sh). libheif >= 1.14.
//
//   make-heic IN.ppm OUT.heic QUALITY ORIENTATION [PROFILE.icc]
#include <libheif/heif.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check(struct heif_error err, const char* what) {
  if (err.code != heif_error_Ok) {
    fprintf(stderr, "%s: %s\n", what, err.message);
    exit(1);
  }
}

static unsigned char* read_file(const char* path, size_t* size) {
  FILE* f = fopen(path, "rb");
  if (!f) { perror(path); exit(1); }
  fseek(f, 0, SEEK_END);
  *size = (size_t)ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char* data = malloc(*size);
  if (fread(data, 1, *size, f) != *size) { perror(path); exit(1); }
  fclose(f);
  return data;
}

int main(int argc, char** argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s IN.ppm OUT.heic QUALITY ORIENTATION [PROFILE.icc]\n", argv[0]);
    return 2;
  }
  size_t size;
  unsigned char* ppm = read_file(argv[1], &size);
  // P6, then width, height and maxval; vips writes a comment line after "P6".
  size_t at = 2;
  int fields[3], header = 0;
  for (int i = 0; i < 3; i++) {
    while (at < size && (ppm[at] == '#' || ppm[at] == ' ' || ppm[at] == '\n')) {
      if (ppm[at] == '#') while (at < size && ppm[at] != '\n') at++;
      else at++;
    }
    if (sscanf((char*)ppm + at, "%d%n", &fields[i], &header) != 1) fields[i] = -1;
    at += (size_t)header;
  }
  int width = fields[0], height = fields[1], max = fields[2];
  header = (int)at;
  if (memcmp(ppm, "P6", 2) != 0 || width <= 0 || height <= 0 || max != 255) {
    fprintf(stderr, "%s: not an 8-bit binary PPM\n", argv[1]);
    return 1;
  }
  const unsigned char* pixels = ppm + header + 1;  // one whitespace byte after maxval

  heif_init(NULL);
  struct heif_image* image;
  check(heif_image_create(width, height, heif_colorspace_RGB, heif_chroma_interleaved_RGB, &image), "image");
  check(heif_image_add_plane(image, heif_channel_interleaved, width, height, 8), "plane");
  int stride;
  uint8_t* plane = heif_image_get_plane(image, heif_channel_interleaved, &stride);
  for (int y = 0; y < height; y++) memcpy(plane + (size_t)y * stride, pixels + (size_t)y * width * 3, (size_t)width * 3);
  if (argc > 5) {
    size_t icc_size;
    unsigned char* icc = read_file(argv[5], &icc_size);
    check(heif_image_set_raw_color_profile(image, "prof", icc, icc_size), "profile");
  }

  struct heif_context* context = heif_context_alloc();
  struct heif_encoder* encoder;
  check(heif_context_get_encoder_for_format(context, heif_compression_HEVC, &encoder), "encoder");
  check(heif_encoder_set_lossy_quality(encoder, atoi(argv[3])), "quality");
  struct heif_encoding_options* options = heif_encoding_options_alloc();
  options->image_orientation = (enum heif_orientation)atoi(argv[4]);
  check(heif_context_encode_image(context, image, encoder, options, NULL), "encode");
  check(heif_context_write_to_file(context, argv[2]), "write");
  heif_encoding_options_free(options);
  heif_encoder_release(encoder);
  heif_image_release(image);
  heif_context_free(context);
  heif_deinit();
  return 0;
}
