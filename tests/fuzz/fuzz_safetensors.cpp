// libFuzzer target for the safetensors reader and everything that reads a checkpoint after it.
// Every input must either parse into a header whose tensors lie inside the buffer, tile it
// exactly and match their shapes, or be rejected with a CheckpointError. Inputs that parse are
// then opened as a checkpoint file and run through the layout scan, the doctor and the
// matrix loader (what `inspect`, `doctor` and `run` do), which may report findings or throw
// CheckpointError / std::invalid_argument with a message, and nothing else. Anything else (another
// exception, a sanitizer report, a hang) is a bug.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "io/safetensors.h"
#include "weights/doctor.h"
#include "weights/linear.h"

namespace {

// One scratch file per fuzzing process, removed when the process exits normally.
struct Scratch {
  std::string path = (access("/dev/shm", W_OK) == 0 ? std::string("/dev/shm") : std::string("/tmp")) + "/fp4moe_fuzz_" +
                     std::to_string(getpid()) + ".safetensors";
  ~Scratch() { std::remove(path.c_str()); }
};

const std::string& scratch_path() {
  static const Scratch s;
  return s.path;
}

void check_checkpoint(const uint8_t* data, size_t size) {
  std::FILE* f = std::fopen(scratch_path().c_str(), "wb");
  if (!f) return;
  const bool ok = std::fwrite(data, 1, size, f) == size;
  std::fclose(f);
  if (!ok) return;
  using namespace fp4moe;
  const io::Checkpoint c = io::Checkpoint::open(scratch_path());
  const weights::CheckpointLayout lay = weights::scan_layout(c);
  weights::DoctorOptions opt;
  opt.scan_fp8_weights = true;
  (void)weights::run_doctor(c, nullptr, io::QuantScheme{}, opt);
  for (const weights::LinearTensors& l : lay.linears) {
    try {
      (void)weights::load_matrix(l);
    } catch (const std::invalid_argument&) {
    }
  }
}

}  // namespace

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
    check_checkpoint(data, size);
  } catch (const CheckpointError&) {
  }
  return 0;
}
