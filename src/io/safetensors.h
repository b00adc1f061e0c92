// safetensors files: a validating, memory-mapped reader with zero-copy tensor views, a
// streaming writer, and sharded checkpoints (model.safetensors.index.json).
//
// The file format: an 8-byte little-endian header length n, n bytes of UTF-8 JSON (an object
// mapping tensor names to {dtype, shape, data_offsets} plus an optional "__metadata__"
// string->string map), then the data buffer. The reader enforces every rule of the reference
// implementation (huggingface/safetensors) and a few it leaves implicit, each with its own
// error kind so tests and fuzzing can tell them apart:
//   - the file holds at least the 8-byte length; the header is at most 100 MB and inside the file
//   - the header is valid UTF-8, starts with '{' and is one JSON object
//   - every entry has a known dtype, a shape of non-negative integers and two data_offsets;
//     names are unique; "__metadata__" is a string->string map
//   - sorted by offset, the tensors tile the buffer from 0 with no hole or overlap, and each
//     one's byte length is numel x dtype size (computed with overflow checks)
//   - the last tensor ends exactly at the end of the file (no trailing bytes)
// Every error names the file, the tensor where there is one, and what is wrong.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace fp4moe::io {

// Element types of the safetensors format (the names on disk are in to_string). U8 also
// carries packed FP4 (two e2m1 codes per byte); F8_E8M0 is the ue8m0 scale byte.
enum class Dtype : uint8_t { kBool, kU8, kI8, kF8_E5M2, kF8_E4M3, kF8_E8M0, kI16, kU16, kF16, kBF16, kI32, kU32, kF32, kF64, kI64, kU64 };
const char* to_string(Dtype d);
std::optional<Dtype> dtype_from_string(std::string_view s);
int64_t dtype_size(Dtype d);

// What went wrong; the first group follows safetensors' SafeTensorError.
enum class ErrorKind : uint8_t {
  kIo,                      // cannot open, stat or map the file
  kHeaderTooSmall,          // fewer than 8 bytes
  kHeaderTooLarge,          // header length above 100 MB
  kInvalidHeaderLength,     // header runs past the end of the file
  kInvalidHeader,           // header is not UTF-8
  kInvalidHeaderStart,      // header does not start with '{'
  kInvalidHeaderJson,       // not JSON, or not an object
  kInvalidTensorEntry,      // entry lacks dtype/shape/data_offsets or has the wrong types
  kUnknownDtype,            // dtype string not in the list
  kDuplicateName,           // a tensor name appears twice
  kInvalidMetadata,         // "__metadata__" is not a string->string map
  kInvalidOffset,           // offsets leave a hole, overlap or run backwards
  kValidationOverflow,      // shape x dtype size overflows 64 bits
  kTensorInvalidInfo,       // byte length differs from shape x dtype size
  kMetadataIncompleteBuffer,// bytes after the last tensor, or the buffer ends early
  kTensorNotFound,
  kInvalidIndex,            // model.safetensors.index.json is wrong
  kInvalidConfig,           // config.json / quantization config is wrong
  kUnsupported,             // valid, but not something fp4moe handles
};
const char* to_string(ErrorKind k);

class CheckpointError : public std::runtime_error {
 public:
  CheckpointError(ErrorKind kind, std::string file, const std::string& what);
  ErrorKind kind() const { return kind_; }
  const std::string& file() const { return file_; }
  const std::string& detail() const { return detail_; }  // what() without the file name

 private:
  ErrorKind kind_;
  std::string file_;
  std::string detail_;
};

struct TensorInfo {
  std::string name;
  Dtype dtype = Dtype::kU8;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets into the data buffer
  uint64_t end = 0;
  int64_t numel() const;
  uint64_t nbytes() const { return end - begin; }
};

// A parsed, validated header. Tensors are sorted by offset.
struct Header {
  uint64_t header_len = 0;  // n, the JSON length (data starts at 8 + n)
  std::map<std::string, std::string> metadata;
  std::vector<TensorInfo> tensors;
};

// Parses and validates a whole safetensors file held in memory. `file` names it in errors.
Header parse_safetensors(std::span<const uint8_t> bytes, const std::string& file);

// An open, validated, memory-mapped file. Tensor views point into the mapping (zero copy);
// they are plain bytes with no alignment promise: read multi-byte values with memcpy.
class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::filesystem::path& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const Header& header() const { return header_; }
  const std::vector<TensorInfo>& tensors() const { return header_.tensors; }
  const TensorInfo* find(std::string_view name) const;
  std::span<const uint8_t> data(const TensorInfo& t) const;
  uint64_t file_size() const { return size_; }

 private:
  SafetensorsFile() = default;
  std::string path_;
  Header header_;
  const uint8_t* map_ = nullptr;
  uint64_t size_ = 0;
  std::unordered_map<std::string_view, size_t> index_;
};

// One tensor of a checkpoint: which file holds it and where.
struct TensorRef {
  const SafetensorsFile* file = nullptr;
  const TensorInfo* info = nullptr;
  std::span<const uint8_t> bytes() const { return file->data(*info); }
};

// A checkpoint: one .safetensors file, a folder with model.safetensors.index.json (every
// shard it names is opened and checked against it), or a folder of .safetensors files.
class Checkpoint {
 public:
  // on_file(i, n, path) is called before each file is opened (progress reporting).
  using OpenProgress = std::function<void(size_t, size_t, const std::string&)>;
  static Checkpoint open(const std::filesystem::path& path, const OpenProgress& on_file = {});

  // The folder holding config.json etc. (the file's folder when opened on a single file).
  const std::filesystem::path& dir() const { return dir_; }
  bool is_single_file() const { return single_file_; }
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }
  // All tensor names, sorted.
  const std::vector<std::string>& names() const { return names_; }
  std::optional<TensorRef> find(std::string_view name) const;
  TensorRef at(std::string_view name) const;  // throws kTensorNotFound
  uint64_t total_tensor_bytes() const;

 private:
  std::filesystem::path dir_;
  bool single_file_ = false;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<std::string> names_;
  std::map<std::string, TensorRef, std::less<>> by_name_;
};

// ---- writing -----------------------------------------------------------------------------
struct TensorSpec {
  std::string name;
  Dtype dtype = Dtype::kU8;
  std::vector<int64_t> shape;
  uint64_t nbytes() const;
};

// Streams one file: the header is written from the specs up front, then each tensor's bytes
// in spec order. The file appears under its name only after finish() (written to a temporary
// name first), so an interrupted run never leaves a valid-looking partial file.
class SafetensorsWriter {
 public:
  SafetensorsWriter(std::filesystem::path path, std::vector<TensorSpec> specs,
                    const std::map<std::string, std::string>& metadata = {});
  ~SafetensorsWriter();
  SafetensorsWriter(const SafetensorsWriter&) = delete;
  SafetensorsWriter& operator=(const SafetensorsWriter&) = delete;

  // The next tensor must be `name` and hold exactly its spec's byte count.
  void write(std::string_view name, std::span<const uint8_t> bytes);
  void finish();
  uint64_t data_bytes() const { return total_; }

 private:
  std::filesystem::path path_, tmp_;
  std::vector<TensorSpec> specs_;
  size_t next_ = 0;
  uint64_t total_ = 0;
  std::FILE* f_ = nullptr;
};

struct OwnedTensor {
  TensorSpec spec;
  std::vector<uint8_t> bytes;
};
void write_safetensors(const std::filesystem::path& path, const std::vector<OwnedTensor>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes model.safetensors.index.json for shards already written.
void write_shard_index(const std::filesystem::path& dir, const std::map<std::string, std::string>& weight_map,
                       uint64_t total_size);

// ---- reading values ----------------------------------------------------------------------
// Elements of a BF16, F32 or F8_E4M3 tensor as fp32 (exact). Throws kUnsupported otherwise.
std::vector<float> tensor_to_f32(const TensorRef& t);
// Elements [first, first + count) only (a slice of a stacked tensor), same dtypes.
std::vector<float> tensor_to_f32(const TensorRef& t, int64_t first, int64_t count);
// The single value of a scalar F32 tensor (shape [] or [1]); throws naming the tensor otherwise.
float scalar_f32(const TensorRef& t);

}  // namespace fp4moe::io
