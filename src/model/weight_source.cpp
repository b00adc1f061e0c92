// In-memory weight source (see weight_source.h).
#include "model/weight_source.h"

#include <stdexcept>

namespace fp4moe::model {

HostTensor InMemoryWeights::tensor(const std::string& name) const {
  auto it = tensors.find(name);
  if (it == tensors.end()) throw std::invalid_argument("missing tensor " + name + " in " + describe());
  return it->second;
}

Matrix InMemoryWeights::matrix(const std::string& name) const {
  auto it = matrices.find(name);
  if (it == matrices.end()) throw std::invalid_argument("missing tensor " + name + " in " + describe());
  return it->second;
}

}  // namespace fp4moe::model
