// libFuzzer target for the safetensors header parser. Every input must either parse into a
// header whose tensors lie inside the buffer, tile it exactly and match their shapes, or be
// rejected with a CheckpointError. Anything else (another exception, a sanitizer report, a
// hang) is a bug.
#include <cstdint>
#include <cstdlib>
#include <span>

#include "io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fp4moe::io;
  try {
    const Header h = parse_safetensors(std::span<const uint8_t>(data, size), "fuzz-input");
    uint64_t pos = 0;
    for (const TensorInfo& t : h.tensors) {
      if (t.begin != pos || t.end < t.begin) std::abort();
      if (static_cast<uint64_t>(t.numel()) * static_cast<uint64_t>(dtype_size(t.dtype)) != t.nbytes()) std::abort();
      pos = t.end;
    }
    if (8 + h.header_len + pos != size) std::abort();
    // Touch every byte of every tensor view: ASan catches a view outside the buffer.
    volatile uint8_t sink = 0;
    for (const TensorInfo& t : h.tensors)
      for (uint64_t i = t.begin; i < t.end; ++i) sink ^= data[8 + h.header_len + i];
  } catch (const CheckpointError&) {
  }
  return 0;
}
