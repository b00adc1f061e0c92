// Reads float32 values (raw little-endian bytes) from the file named by argv[1] and writes,
// to the file argv[2], one record per value: its e4m3 code and its e2m1 code; then the
// decoded value of every e4m3 code (256 float32) and every e2m1 code (16 float32).
// crosscheck_codecs.py compares all of it with ml_dtypes, an independent implementation.
#include <cstdint>
#include <cstdio>
#include <vector>

#include "formats/codecs.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: codec_table IN.f32 OUT.bin\n");
    return 2;
  }
  std::FILE* in = std::fopen(argv[1], "rb");
  if (!in) {
    std::fprintf(stderr, "codec_table: cannot open %s\n", argv[1]);
    return 2;
  }
  std::vector<float> xs;
  float v;
  while (std::fread(&v, 4, 1, in) == 1) xs.push_back(v);
  std::fclose(in);
  std::FILE* out = std::fopen(argv[2], "wb");
  if (!out) {
    std::fprintf(stderr, "codec_table: cannot write %s\n", argv[2]);
    return 2;
  }
  for (float x : xs) {
    const uint8_t codes[2] = {fp4moe::e4m3_from_float_sat(x), fp4moe::e2m1_from_float(x)};
    std::fwrite(codes, 1, 2, out);
  }
  for (int c = 0; c < 256; ++c) {
    const float d = fp4moe::e4m3_to_float(static_cast<uint8_t>(c));
    std::fwrite(&d, 4, 1, out);
  }
  for (int c = 0; c < 16; ++c) {
    const float d = fp4moe::e2m1_to_float(static_cast<uint8_t>(c));
    std::fwrite(&d, 4, 1, out);
  }
  return std::fclose(out) == 0 ? 0 : 2;
}
