// safetensors reader/writer: every validation rule triggered by a crafted file (checked by its
// error kind and by the message naming the file), write->read round trips compared byte for
// byte against the bytes written, and sharded checkpoints through the index.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <random>
#include <string>

#include "io/safetensors.h"
#include "util/test_util.h"
#include "util/tiny_checkpoint.h"

namespace fp4moe::io {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

// An 8-byte little-endian length (given, or the header's), the header text, then the data.
std::string craft_bytes(const std::string& header, const std::string& data, int64_t length = -1) {
  std::string out(8, '\0');
  const uint64_t n = length < 0 ? header.size() : static_cast<uint64_t>(length);
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + data;
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Opens the file, expects a CheckpointError of this kind whose message names the file.
void expect_error(const TempDir& d, const std::string& bytes, ErrorKind kind, const std::string& needle = "") {
  const fs::path p = d.path() / "bad.safetensors";
  write_file(p, bytes);
  try {
    SafetensorsFile::open(p);
    FAIL() << "expected error " << to_string(kind);
  } catch (const CheckpointError& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos) << e.what();
    if (!needle.empty()) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  }
}

TEST(SafetensorsReader, AcceptsTheReferenceExample) {
  // The serialization example of the reference implementation: an I32 [2,2] tensor... as F32 [1,2,3].
  TempDir d;
  std::string data(24, '\0');
  const float v[6] = {0, 1, 2, 3, 4, 5};
  std::memcpy(data.data(), v, 24);
  write_file(d.path() / "a.safetensors",
             craft_bytes(R"({"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}})", data));
  const auto f = SafetensorsFile::open(d.path() / "a.safetensors");
  ASSERT_EQ(f->tensors().size(), 1u);
  const TensorInfo* t = f->find("attn.0");
  ASSERT_NE(t, nullptr);
  EXPECT_EQ(t->shape, (std::vector<int64_t>{1, 2, 3}));
  ASSERT_EQ(f->data(*t).size(), 24u);
  EXPECT_EQ(std::memcmp(f->data(*t).data(), v, 24), 0);
}

TEST(SafetensorsReader, RejectsEveryMalformedHeader) {
  TempDir d;
  const std::string ok_entry = R"("a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]})";
  expect_error(d, "", ErrorKind::kHeaderTooSmall);
  expect_error(d, "\x05\x00\x00", ErrorKind::kHeaderTooSmall);
  expect_error(d, craft_bytes("{}", "", 100'000'001), ErrorKind::kHeaderTooLarge);
  expect_error(d, craft_bytes("{}", "", int64_t{1} << 62), ErrorKind::kHeaderTooLarge);
  expect_error(d, craft_bytes("{}", "", 64), ErrorKind::kInvalidHeaderLength);
  expect_error(d, craft_bytes("{\"\xff\xfe\":1}", ""), ErrorKind::kInvalidHeader);
  expect_error(d, craft_bytes("{\"\xc0\xaf\":1}", ""), ErrorKind::kInvalidHeader);  // overlong '/'
  expect_error(d, craft_bytes(" {}", ""), ErrorKind::kInvalidHeaderStart);
  expect_error(d, craft_bytes("", ""), ErrorKind::kInvalidHeaderStart);
  expect_error(d, craft_bytes("{\"a\":", ""), ErrorKind::kInvalidHeaderJson);
  expect_error(d, craft_bytes("{} {}", ""), ErrorKind::kInvalidHeaderJson);
  // Entries
  expect_error(d, craft_bytes(R"({"a":{"dtype":"U8","shape":[4]}})", "abcd"), ErrorKind::kInvalidTensorEntry, "'a'");
  expect_error(d, craft_bytes(R"({"a":[1,2]})", ""), ErrorKind::kInvalidTensorEntry);
  expect_error(d, craft_bytes(R"({"a":{"dtype":"U8","shape":[-4],"data_offsets":[0,4]}})", "abcd"), ErrorKind::kInvalidTensorEntry);
  expect_error(d, craft_bytes(R"({"a":{"dtype":"U8","shape":[4.0],"data_offsets":[0,4]}})", "abcd"), ErrorKind::kInvalidTensorEntry);
  expect_error(d, craft_bytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0]}})", "abcd"), ErrorKind::kInvalidTensorEntry);
  expect_error(d, craft_bytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,-4]}})", "abcd"), ErrorKind::kInvalidTensorEntry);
  expect_error(d, craft_bytes(R"({"a":{"dtype":"F4_E2M1","shape":[4],"data_offsets":[0,4]}})", "abcd"), ErrorKind::kUnknownDtype, "F4_E2M1");
  expect_error(d, craft_bytes(R"({"a":{"dtype":7,"shape":[4],"data_offsets":[0,4]}})", "abcd"), ErrorKind::kInvalidTensorEntry);
  expect_error(d, craft_bytes("{" + ok_entry + "," + ok_entry + "}", "abcd"), ErrorKind::kDuplicateName, "'a'");
  expect_error(d, craft_bytes(R"({"__metadata__":{"k":1},)" + ok_entry + "}", "abcd"), ErrorKind::kInvalidMetadata);
  expect_error(d, craft_bytes(R"({"__metadata__":["x"],)" + ok_entry + "}", "abcd"), ErrorKind::kInvalidMetadata);
  // Offsets: hole at the start, hole between, overlap, backwards
  expect_error(d, craft_bytes(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[1,5]}})", "xabcd"), ErrorKind::kInvalidOffset, "'a'");
  expect_error(d,
               craft_bytes(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}})",
                           "abxcd"),
               ErrorKind::kInvalidOffset, "'b'");
  expect_error(d,
               craft_bytes(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}})",
                           "abc"),
               ErrorKind::kInvalidOffset, "'b'");
  expect_error(d, craft_bytes(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[0,0]},"b":{"dtype":"U8","shape":[0],"data_offsets":[2,0]}})", ""),
               ErrorKind::kInvalidOffset);
  // Sizes
  expect_error(d, craft_bytes(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,4]}})", "abcd"), ErrorKind::kTensorInvalidInfo, "'a'");
  expect_error(d, craft_bytes(R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,0]}})", ""),
               ErrorKind::kValidationOverflow, "'a'");
  expect_error(d, craft_bytes(R"({"a":{"dtype":"U64","shape":[2305843009213693952],"data_offsets":[0,0]}})", ""),
               ErrorKind::kValidationOverflow);
  // Buffer coverage: trailing bytes, and a buffer that ends early
  expect_error(d, craft_bytes("{" + ok_entry + "}", "abcdE"), ErrorKind::kMetadataIncompleteBuffer);
  expect_error(d, craft_bytes("{" + ok_entry + "}", "abc"), ErrorKind::kMetadataIncompleteBuffer);
  expect_error(d, craft_bytes("{}", "x"), ErrorKind::kMetadataIncompleteBuffer);
}

TEST(SafetensorsReader, AcceptsPaddingEmptyTensorsAndAllDtypes) {
  TempDir d;
  // Header padded with spaces (as the reference writer pads), a zero-size tensor, metadata.
  const std::string h =
      R"({"__metadata__":{"format":"pt"},"z":{"dtype":"BF16","shape":[0,3],"data_offsets":[0,0]},"a":{"dtype":"F8_E8M0","shape":[2],"data_offsets":[0,2]},"s":{"dtype":"F32","shape":[],"data_offsets":[2,6]}}    )";
  write_file(d.path() / "p.safetensors", craft_bytes(h, "xyABCD"));
  const auto f = SafetensorsFile::open(d.path() / "p.safetensors");
  EXPECT_EQ(f->tensors().size(), 3u);
  EXPECT_EQ(f->header().metadata.at("format"), "pt");
  EXPECT_EQ(f->find("s")->numel(), 1);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f->data(*f->find("s")).data()), 4), "ABCD");
  for (const char* name : {"BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64", "I64", "U64"}) {
    const auto dt = dtype_from_string(name);
    ASSERT_TRUE(dt.has_value()) << name;
    EXPECT_STREQ(to_string(*dt), name);
  }
}

TEST(SafetensorsWriter, RoundTripsRandomTensorsByteForByte) {
  test::SeededRng r;
  TempDir d;
  const Dtype dtypes[] = {Dtype::kU8, Dtype::kF8_E4M3, Dtype::kF8_E8M0, Dtype::kBF16, Dtype::kF32, Dtype::kI64, Dtype::kF16};
  std::vector<OwnedTensor> ts;
  std::uniform_int_distribution<int> dim(0, 7), byte(0, 255), pick(0, 6), rank(0, 3);
  for (int i = 0; i < 20; ++i) {
    OwnedTensor t;
    t.spec.name = "t." + std::to_string(i) + (i % 3 ? ".weight" : ".weight_scale");
    t.spec.dtype = dtypes[pick(r.rng)];
    for (int k = rank(r.rng); k > 0; --k) t.spec.shape.push_back(dim(r.rng));
    t.bytes.resize(t.spec.nbytes());
    for (uint8_t& b : t.bytes) b = static_cast<uint8_t>(byte(r.rng));
    ts.push_back(std::move(t));
  }
  write_safetensors(d.path() / "rt.safetensors", ts, {{"format", "pt"}, {"note", "ünïcode"}});
  EXPECT_FALSE(fs::exists(d.path() / "rt.safetensors.partial"));
  const auto f = SafetensorsFile::open(d.path() / "rt.safetensors");
  EXPECT_EQ((8 + f->header().header_len) % 8, 0u) << "data must start 8-byte aligned";
  EXPECT_EQ(f->header().metadata.at("note"), "ünïcode");
  ASSERT_EQ(f->tensors().size(), ts.size());
  for (const OwnedTensor& t : ts) {
    const TensorInfo* info = f->find(t.spec.name);
    ASSERT_NE(info, nullptr) << t.spec.name;
    EXPECT_EQ(info->dtype, t.spec.dtype);
    EXPECT_EQ(info->shape, t.spec.shape);
    const auto got = f->data(*info);
    ASSERT_EQ(got.size(), t.bytes.size());
    EXPECT_TRUE(std::equal(got.begin(), got.end(), t.bytes.begin())) << t.spec.name;
  }
}

TEST(SafetensorsWriter, RefusesMisuseAndLeavesNoPartialFile) {
  TempDir d;
  const fs::path p = d.path() / "w.safetensors";
  {
    SafetensorsWriter w(p, {{"a", Dtype::kU8, {2}}, {"b", Dtype::kU8, {1}}});
    const uint8_t two[2] = {1, 2};
    EXPECT_THROW(w.write("b", std::span<const uint8_t>(two, 1)), std::logic_error);  // out of order
    EXPECT_THROW(w.write("a", std::span<const uint8_t>(two, 1)), std::logic_error);  // wrong size
    w.write("a", two);
    EXPECT_THROW(w.finish(), std::logic_error);  // b unwritten
  }
  EXPECT_FALSE(fs::exists(p));
  EXPECT_FALSE(fs::exists(p.string() + ".partial"));
  EXPECT_THROW(SafetensorsWriter(p, {{"a", Dtype::kU8, {1}}, {"a", Dtype::kU8, {1}}}), std::invalid_argument);
}

TEST(Checkpoint, ShardedThroughTheIndex) {
  TempDir d;
  write_safetensors(d.path() / "s1.safetensors", {{{"x", Dtype::kU8, {3}}, {1, 2, 3}}});
  write_safetensors(d.path() / "s2.safetensors", {{{"y", Dtype::kU8, {1}}, {9}}, {{"z", Dtype::kU8, {0}}, {}}});
  write_shard_index(d.path(), {{"x", "s1.safetensors"}, {"y", "s2.safetensors"}, {"z", "s2.safetensors"}}, 4);
  const Checkpoint c = Checkpoint::open(d.path());
  EXPECT_EQ(c.names(), (std::vector<std::string>{"x", "y", "z"}));
  EXPECT_EQ(c.at("y").bytes()[0], 9);
  EXPECT_EQ(c.files().size(), 2u);
  EXPECT_THROW(c.at("nope"), CheckpointError);

  // The index names a tensor its shard lacks.
  write_shard_index(d.path(), {{"x", "s1.safetensors"}, {"y", "s1.safetensors"}, {"z", "s2.safetensors"}}, 4);
  try {
    Checkpoint::open(d.path());
    FAIL();
  } catch (const CheckpointError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidIndex) << e.what();
    EXPECT_NE(std::string(e.what()).find("'y'"), std::string::npos) << e.what();
  }
  // A shard outside the folder, a missing shard, a tensor not listed, a tensor in two shards.
  write_shard_index(d.path(), {{"x", "../s1.safetensors"}}, 4);
  EXPECT_THROW(Checkpoint::open(d.path()), CheckpointError);
  write_shard_index(d.path(), {{"x", "s1.safetensors"}, {"y", "s3.safetensors"}}, 4);
  try {
    Checkpoint::open(d.path());
    FAIL();
  } catch (const CheckpointError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kIo) << e.what();
  }
  write_shard_index(d.path(), {{"x", "s1.safetensors"}, {"y", "s2.safetensors"}}, 4);
  EXPECT_THROW(Checkpoint::open(d.path()), CheckpointError);
  write_safetensors(d.path() / "s2.safetensors", {{{"x", Dtype::kU8, {1}}, {9}}});
  write_shard_index(d.path(), {{"x", "s1.safetensors"}, {"y", "s2.safetensors"}}, 4);
  try {
    Checkpoint::open(d.path());
    FAIL();
  } catch (const CheckpointError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kDuplicateName) << e.what();
  }
  // Not JSON.
  write_file(d.path() / "model.safetensors.index.json", "{nope");
  try {
    Checkpoint::open(d.path());
    FAIL();
  } catch (const CheckpointError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInvalidIndex) << e.what();
  }
}

TEST(Checkpoint, ValuesReadExactly) {
  TempDir d;
  const float f[2] = {1.5f, -0.0078125f};
  std::vector<uint8_t> fb(8);
  std::memcpy(fb.data(), f, 8);
  write_safetensors(d.path() / "m.safetensors",
                    {{{"bf", Dtype::kBF16, {2}}, {0x80, 0x3F, 0x00, 0xC0}},  // 1.0, -2.0
                     {{"e4", Dtype::kF8_E4M3, {2}}, {0x38, 0x7F}},          // 1.0, NaN
                     {{"f", Dtype::kF32, {2}}, fb},
                     {{"s", Dtype::kF32, {}}, {0, 0, 0x80, 0x3F}}});
  const Checkpoint c = Checkpoint::open(d.path() / "m.safetensors");
  EXPECT_TRUE(c.is_single_file());
  EXPECT_EQ(tensor_to_f32(c.at("bf")), (std::vector<float>{1.0f, -2.0f}));
  const auto e4 = tensor_to_f32(c.at("e4"));
  EXPECT_EQ(e4[0], 1.0f);
  EXPECT_TRUE(std::isnan(e4[1]));
  EXPECT_EQ(tensor_to_f32(c.at("f")), (std::vector<float>{1.5f, -0.0078125f}));
  EXPECT_EQ(scalar_f32(c.at("s")), 1.0f);
  EXPECT_THROW(scalar_f32(c.at("f")), CheckpointError);
}

}  // namespace
}  // namespace fp4moe::io
