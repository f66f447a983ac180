// The emulated "hccl" process-group backend: each collective runs on a wrapped gloo backend over
// CPU views of the npu tensors' memory (no copies), so results land in the npu tensors themselves.
#include <torch/extension.h>
#include <torch/version.h>

#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <ATen/core/ivalue.h>

#include <vector>

namespace emu {
at::Tensor host_view(const at::Tensor& t);
}

namespace {

std::vector<at::Tensor> host(const std::vector<at::Tensor>& tensors) {
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const auto& t : tensors) out.push_back(emu::host_view(t));
  return out;
}

std::vector<std::vector<at::Tensor>> host(const std::vector<std::vector<at::Tensor>>& lists) {
  std::vector<std::vector<at::Tensor>> out;
  out.reserve(lists.size());
  for (const auto& l : lists) out.push_back(host(l));
  return out;
}

c10::optional<c10::Device> npu_device_of(const std::vector<at::Tensor>& tensors) {
  for (const auto& t : tensors) {
    if (t.defined() && t.device().type() == c10::DeviceType::PrivateUse1) return t.device();
  }
  return c10::nullopt;
}

// The work of a collective on npu tensors: gloo's work underneath (or none: done already), with a
// future whose value is the npu tensors, as HCCL's is (gloo's holds the CPU views).
class EmuWork : public c10d::Work {
 public:
  EmuWork(c10::intrusive_ptr<c10d::Work> inner, std::vector<at::Tensor> result)
      : inner_(std::move(inner)), result_(std::move(result)) {
    auto device = npu_device_of(result_);
    std::vector<c10::Device> devices;
    if (device.has_value()) devices.push_back(*device);
    future_ = c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()), devices);
    auto future = future_;
    auto value = result_;
    if (inner_) {
      inner_->getFuture()->addCallback([future, value](c10::ivalue::Future& done) {
        if (done.hasError()) {
          future->setError(done.exception_ptr());
        } else {
          future->markCompleted(c10::IValue(value));
        }
      });
    } else {
      future_->markCompleted(c10::IValue(result_));
    }
  }
  bool isCompleted() override { return inner_ ? inner_->isCompleted() : true; }
  bool isSuccess() const override { return inner_ ? inner_->isSuccess() : true; }
  std::exception_ptr exception() const override { return inner_ ? inner_->exception() : nullptr; }
  bool wait(std::chrono::milliseconds timeout) override { return inner_ ? inner_->wait(timeout) : true; }
  std::vector<at::Tensor> result() override { return result_; }
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override { return future_; }

 private:
  c10::intrusive_ptr<c10d::Work> inner_;
  std::vector<at::Tensor> result_;
  c10::intrusive_ptr<c10::ivalue::Future> future_;
};

c10::intrusive_ptr<c10d::Work> wrap(c10::intrusive_ptr<c10d::Work> inner, std::vector<at::Tensor> result) {
  return c10::make_intrusive<EmuWork>(std::move(inner), std::move(result));
}

std::vector<at::Tensor> flat(const std::vector<std::vector<at::Tensor>>& lists) {
  std::vector<at::Tensor> out;
  for (const auto& l : lists) out.insert(out.end(), l.begin(), l.end());
  return out;
}

class HcclEmuBackend : public c10d::Backend {
 public:
  HcclEmuBackend(c10::intrusive_ptr<c10d::Backend> gloo, int rank, int size)
      : c10d::Backend(rank, size), gloo_(std::move(gloo)) {}

  const std::string getBackendName() const override { return "hccl"; }

  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& opts) override {
    auto h = host(tensors);
    return wrap(gloo_->broadcast(h, opts), tensors);
  }

  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& opts) override {
    auto h = host(tensors);
    return wrap(gloo_->allreduce(h, opts), tensors);
  }

  c10::intrusive_ptr<c10d::Work> allreduce_coalesced(std::vector<at::Tensor>& tensors,
                                                     const c10d::AllreduceCoalescedOptions& opts) override {
    auto h = host(tensors);
    return wrap(gloo_->allreduce_coalesced(h, opts), tensors);
  }

  c10::intrusive_ptr<c10d::Work> reduce(std::vector<at::Tensor>& tensors, const c10d::ReduceOptions& opts) override {
    auto h = host(tensors);
    return wrap(gloo_->reduce(h, opts), tensors);
  }

  c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                           std::vector<at::Tensor>& inputs,
                                           const c10d::AllgatherOptions& opts) override {
    auto o = host(outputs);
    auto i = host(inputs);
    return wrap(gloo_->allgather(o, i, opts), flat(outputs));
  }

  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& output, at::Tensor& input,
                                                 const c10d::AllgatherOptions& opts) override {
    // gloo has no flat all-gather: gather into views of the flat output
    at::Tensor flat = emu::host_view(output);
    std::vector<std::vector<at::Tensor>> outs{flat.chunk(getSize())};
    std::vector<at::Tensor> ins{emu::host_view(input)};
    gloo_->allgather(outs, ins, opts)->wait();
    return wrap(nullptr, {output});
  }

  c10::intrusive_ptr<c10d::Work> allgather_coalesced(std::vector<std::vector<at::Tensor>>& outputs,
                                                     std::vector<at::Tensor>& inputs,
                                                     const c10d::AllgatherOptions& opts) override {
    auto o = host(outputs);
    auto i = host(inputs);
    return wrap(gloo_->allgather_coalesced(o, i, opts), flat(outputs));
  }

  c10::intrusive_ptr<c10d::Work> gather(std::vector<std::vector<at::Tensor>>& outputs,
                                        std::vector<at::Tensor>& inputs, const c10d::GatherOptions& opts) override {
    auto o = host(outputs);
    auto i = host(inputs);
    return wrap(gloo_->gather(o, i, opts), flat(outputs));
  }

  c10::intrusive_ptr<c10d::Work> scatter(std::vector<at::Tensor>& outputs,
                                         std::vector<std::vector<at::Tensor>>& inputs,
                                         const c10d::ScatterOptions& opts) override {
    auto o = host(outputs);
    auto i = host(inputs);
    return wrap(gloo_->scatter(o, i, opts), outputs);
  }

  // Reduce-scatter as an all-reduce of a copy, then each rank's chunk (gloo has none of its own).
  c10::intrusive_ptr<c10d::Work> reduce_scatter(std::vector<at::Tensor>& outputs,
                                                std::vector<std::vector<at::Tensor>>& inputs,
                                                const c10d::ReduceScatterOptions& opts) override {
    TORCH_CHECK(outputs.size() == 1 && inputs.size() == 1, "hccl (emulated): one tensor per rank");
    std::vector<at::Tensor> parts = host(inputs[0]);
    TORCH_CHECK(static_cast<int>(parts.size()) == getSize(), "hccl (emulated): reduce_scatter needs world_size inputs");
    std::vector<at::Tensor> flat{at::cat(parts).contiguous()};
    c10d::AllreduceOptions ar;
    ar.reduceOp = opts.reduceOp;
    gloo_->allreduce(flat, ar)->wait();
    at::Tensor out = emu::host_view(outputs[0]);
    out.copy_(flat[0].chunk(getSize())[getRank()].view(out.sizes()));
    return wrap(nullptr, outputs);
  }

  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(at::Tensor& output, at::Tensor& input,
                                                      const c10d::ReduceScatterOptions& opts) override {
    std::vector<at::Tensor> flat{emu::host_view(input).clone()};
    c10d::AllreduceOptions ar;
    ar.reduceOp = opts.reduceOp;
    gloo_->allreduce(flat, ar)->wait();
    at::Tensor out = emu::host_view(output);
    out.copy_(flat[0].reshape(-1).chunk(getSize())[getRank()].view(out.sizes()));
    return wrap(nullptr, {output});
  }

  c10::intrusive_ptr<c10d::Work> alltoall_base(at::Tensor& output, at::Tensor& input,
                                               std::vector<int64_t>& output_split_sizes,
                                               std::vector<int64_t>& input_split_sizes,
                                               const c10d::AllToAllOptions& opts) override {
    at::Tensor o = emu::host_view(output);
    at::Tensor i = emu::host_view(input);
    return wrap(gloo_->alltoall_base(o, i, output_split_sizes, input_split_sizes, opts), {output});
  }

  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor>& tensors, int dst, int tag) override {
    auto h = host(tensors);
    return wrap(gloo_->send(h, dst, tag), tensors);
  }

  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor>& tensors, int src, int tag) override {
    auto h = host(tensors);
    return wrap(gloo_->recv(h, src, tag), tensors);
  }

  c10::intrusive_ptr<c10d::Work> recvAnysource(std::vector<at::Tensor>& tensors, int tag) override {
    auto h = host(tensors);
    return wrap(gloo_->recvAnysource(h, tag), tensors);
  }

  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& opts) override {
    c10d::BarrierOptions cpu = opts;
    cpu.device_ids.clear();
    return gloo_->barrier(cpu);
  }

  void setSequenceNumberForGroup() override { gloo_->setSequenceNumberForGroup(); }
  uint64_t getSequenceNumberForGroup() override { return gloo_->getSequenceNumberForGroup(); }

 private:
  c10::intrusive_ptr<c10d::Backend> gloo_;
};

}  // namespace

void init_hccl(py::module& m) {
  // The base class is torch's: import its module first so pybind11 knows the type.
  py::module::import("torch._C._distributed_c10d");
  py::class_<HcclEmuBackend, c10d::Backend, c10::intrusive_ptr<HcclEmuBackend>>(m, "HcclEmuBackend")
      .def(py::init<c10::intrusive_ptr<c10d::Backend>, int, int>(), py::arg("gloo"), py::arg("rank"),
           py::arg("size"));
}
