// The emulated Ascend NPU: a PrivateUse1 backend ("npu") whose memory is host memory.
//
// Tensors on "npu" live in host memory allocated here (counted per device index). Every ATen op
// without a kernel of its own reaches a boxed fallback that re-wraps the npu tensors as CPU
// tensors over the *same* memory, runs the CPU kernel, and re-wraps its outputs as npu tensors
// (fresh outputs are adopted, not copied). Built for torch 2.1 and 2.7 (see the #if blocks).
#include <torch/extension.h>
#include <torch/version.h>

#include <ATen/EmptyTensor.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/detail/PrivateUse1HooksInterface.h>
#include <ATen/native/Resize.h>
#include <ATen/ops/as_strided_native.h>
#include <ATen/ops/unfold_native.h>
#include <ATen/ops/view_native.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/autograd/autograd_not_implemented_fallback.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/distributed/c10d/reducer_timer.hpp>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#define EMU_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

#if !EMU_TORCH_AT_LEAST(2, 4)
#include <ATen/ops/_reshape_alias_native.h>
#endif

#if EMU_TORCH_AT_LEAST(2, 3)
#define EMU_ALLOC_CONST
#else
#define EMU_ALLOC_CONST const
#endif

namespace emu {

constexpr c10::DeviceType kNpu = c10::DeviceType::PrivateUse1;
constexpr int kMaxDevices = 64;

// ---------------------------------------------------------------- devices

c10::DeviceIndex device_count() {
  static const c10::DeviceIndex count = [] {
    const char* env = std::getenv("FLASHOCC_EMULATE_NPU_COUNT");
    int n = (env && *env) ? std::atoi(env) : 8;
    return static_cast<c10::DeviceIndex>(std::max(0, std::min(n, kMaxDevices)));
  }();
  return count;
}

// Per thread, as CUDA's current device: autograd's device threads set their own.
thread_local c10::DeviceIndex tls_device = 0;

void check_index(c10::DeviceIndex index) {
  TORCH_CHECK(index >= 0 && index < device_count(), "Invalid device ordinal npu:", static_cast<int>(index),
              " (the emulated NPU has ", static_cast<int>(device_count()),
              " devices; FLASHOCC_EMULATE_NPU_COUNT sets how many)");
}

c10::DeviceIndex current_device() { return tls_device; }

void set_device(c10::DeviceIndex index) {
  check_index(index);
  tls_device = index;
}

// Sets the current device for a scope (allocations inside land on that index).
struct DeviceScope {
  c10::DeviceIndex prev;
  explicit DeviceScope(c10::DeviceIndex index) : prev(tls_device) { tls_device = index; }
  ~DeviceScope() { tls_device = prev; }
};

c10::DeviceIndex resolve(c10::optional<c10::Device> device) {
  if (device.has_value() && device->type() == kNpu && device->has_index()) {
    check_index(device->index());
    return device->index();
  }
  return tls_device;
}

// ---------------------------------------------------------------- memory statistics

struct Stats {
  std::atomic<int64_t> allocated{0};
  std::atomic<int64_t> peak{0};
  std::atomic<int64_t> peak_reserved{0};
  std::atomic<int64_t> allocations{0};
};
Stats g_stats[kMaxDevices];

void raise_peak(std::atomic<int64_t>& peak, int64_t value) {
  int64_t seen = peak.load();
  while (value > seen && !peak.compare_exchange_weak(seen, value)) {
  }
}

void note_alloc(c10::DeviceIndex dev, size_t n) {
  auto& s = g_stats[dev];
  int64_t now = s.allocated.fetch_add(static_cast<int64_t>(n)) + static_cast<int64_t>(n);
  s.allocations.fetch_add(1);
  raise_peak(s.peak, now);
  raise_peak(s.peak_reserved, now);
}

void note_free(c10::DeviceIndex dev, size_t n) { g_stats[dev].allocated.fetch_sub(static_cast<int64_t>(n)); }

// ---------------------------------------------------------------- allocator

struct Block {
  void* ptr;
  size_t nbytes;
  c10::DeviceIndex device;
};

void free_block(void* ctx) {
  auto* block = static_cast<Block*>(ctx);
  if (block->ptr) c10::free_cpu(block->ptr);
  note_free(block->device, block->nbytes);
  delete block;
}

struct NpuAllocator final : at::Allocator {
  at::DataPtr allocate_on(size_t nbytes, c10::DeviceIndex device) const {
    void* ptr = nbytes ? c10::alloc_cpu(nbytes) : nullptr;
    note_alloc(device, nbytes);
    return {ptr, new Block{ptr, nbytes, device}, &free_block, c10::Device(kNpu, device)};
  }
  at::DataPtr allocate(size_t nbytes) EMU_ALLOC_CONST override { return allocate_on(nbytes, tls_device); }
  at::DeleterFnPtr raw_deleter() const override { return nullptr; }
#if EMU_TORCH_AT_LEAST(2, 3)
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
#endif
};

NpuAllocator g_allocator;

// An npu storage over memory a CPU kernel allocated: keeps the CPU storage alive, no copy.
struct Adopted {
  c10::Storage keep;
  size_t nbytes;
  c10::DeviceIndex device;
};

void free_adopted(void* ctx) {
  auto* adopted = static_cast<Adopted*>(ctx);
  note_free(adopted->device, adopted->nbytes);
  delete adopted;
}

at::DataPtr adopt_data(const c10::Storage& cpu, c10::DeviceIndex device) {
  size_t n = cpu.nbytes();
  note_alloc(device, n);
  return {cpu.mutable_data(), new Adopted{cpu, n, device}, &free_adopted, c10::Device(kNpu, device)};
}

c10::Storage adopt_storage(const c10::Storage& cpu, c10::DeviceIndex device) {
  return c10::Storage(c10::Storage::use_byte_size_t(), cpu.nbytes(), adopt_data(cpu, device), &g_allocator,
                      /*resizable=*/true);
}

// ---------------------------------------------------------------- pinned host memory

std::mutex g_pinned_mutex;
std::map<uintptr_t, size_t> g_pinned;  // start -> size of each live pinned block

void free_pinned(void* ptr) {
  {
    std::lock_guard<std::mutex> lock(g_pinned_mutex);
    g_pinned.erase(reinterpret_cast<uintptr_t>(ptr));
  }
  c10::free_cpu(ptr);
}

bool is_pinned_ptr(const void* data) {
  auto p = reinterpret_cast<uintptr_t>(data);
  std::lock_guard<std::mutex> lock(g_pinned_mutex);
  auto it = g_pinned.upper_bound(p);
  if (it == g_pinned.begin()) return false;
  --it;
  return p >= it->first && p < it->first + std::max<size_t>(it->second, 1);
}

struct PinnedAllocator final : at::Allocator {
  at::DataPtr allocate(size_t nbytes) EMU_ALLOC_CONST override {
    void* ptr = c10::alloc_cpu(std::max<size_t>(nbytes, 1));
    {
      std::lock_guard<std::mutex> lock(g_pinned_mutex);
      g_pinned[reinterpret_cast<uintptr_t>(ptr)] = nbytes;
    }
    return {ptr, ptr, &free_pinned, c10::Device(c10::kCPU)};
  }
  at::DeleterFnPtr raw_deleter() const override { return &free_pinned; }
#if EMU_TORCH_AT_LEAST(2, 3)
  void copy_data(void* dest, const void* src, std::size_t count) const override { default_copy_data(dest, src, count); }
#endif
};

PinnedAllocator g_pinned_allocator;

// ---------------------------------------------------------------- host views

void release_storage(void* ctx) { delete static_cast<c10::Storage*>(ctx); }

// A CPU storage over an npu storage's memory; it keeps the npu storage alive.
c10::Storage host_storage(const c10::Storage& npu) {
  c10::DataPtr ptr(npu.mutable_data(), new c10::Storage(npu), &release_storage, c10::Device(c10::kCPU));
  // Resizable with the CPU allocator, so out= kernels may grow it; the fallback adopts the result.
  return c10::Storage(c10::Storage::use_byte_size_t(), npu.nbytes(), std::move(ptr), c10::GetCPUAllocator(),
                      /*resizable=*/true);
}

at::Tensor wrap(c10::Storage storage, c10::DispatchKey key, const at::Tensor& like) {
  auto out = at::detail::make_tensor<c10::TensorImpl>(std::move(storage), c10::DispatchKeySet(key), like.dtype());
  auto* impl = out.unsafeGetTensorImpl();
  impl->set_sizes_and_strides(like.sizes(), like.strides());
  impl->set_storage_offset(like.storage_offset());
  if (like.is_neg()) out._set_neg(true);
  if (like.is_conj()) out._set_conj(true);
  return out;
}

// The CPU tensor over an npu tensor's memory (a CPU tensor is returned as it is).
at::Tensor host_view(const at::Tensor& t) {
  if (!t.defined() || t.device().type() != kNpu) return t;
  return wrap(host_storage(t.storage()), c10::DispatchKey::CPU, t);
}

// ---------------------------------------------------------------- factories, copies, resize, set_

at::Tensor npu_empty(c10::IntArrayRef size, c10::optional<at::ScalarType> dtype, c10::optional<at::Layout> layout,
                     c10::optional<c10::Device> device, c10::optional<bool> pin_memory,
                     c10::optional<at::MemoryFormat> memory_format) {
  TORCH_CHECK(!layout.has_value() || *layout == at::kStrided, "the emulated npu has strided tensors only");
  DeviceScope scope(resolve(device));
  return at::detail::empty_generic(size, &g_allocator, c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                   c10::dtype_or_default(dtype), memory_format);
}

at::Tensor npu_empty_strided(c10::IntArrayRef size, c10::IntArrayRef stride, c10::optional<at::ScalarType> dtype,
                             c10::optional<at::Layout> layout, c10::optional<c10::Device> device,
                             c10::optional<bool> pin_memory) {
  TORCH_CHECK(!layout.has_value() || *layout == at::kStrided, "the emulated npu has strided tensors only");
  DeviceScope scope(resolve(device));
  return at::detail::empty_strided_generic(size, stride, &g_allocator,
                                           c10::DispatchKeySet(c10::DispatchKey::PrivateUse1),
                                           c10::dtype_or_default(dtype));
}

bool same_memory(const at::Tensor& a, const at::Tensor& b) {
  return a.data_ptr() == b.data_ptr() && a.sizes().equals(b.sizes()) && a.strides().equals(b.strides()) &&
         a.scalar_type() == b.scalar_type() && a.is_neg() == b.is_neg() && a.is_conj() == b.is_conj();
}

at::Tensor npu_copy_from(const at::Tensor& self, const at::Tensor& dst, bool non_blocking) {
  for (const auto* t : {&self, &dst}) {
    TORCH_CHECK(t->device().type() == kNpu || t->device().is_cpu(),
                "the emulated npu copies to and from cpu and npu only, not ", t->device());
  }
  if (self.numel() == 0 || same_memory(self, dst)) return dst;  // DDP copies a bucket onto itself
  at::Tensor src = host_view(self);
  at::Tensor out = host_view(dst);
  out.copy_(src);
  return dst;
}

at::Tensor npu_copy_from_and_resize(const at::Tensor& self, const at::Tensor& dst) {
  dst.resize_(self.sizes());
  return npu_copy_from(self, dst, false);
}

// Grows an npu storage on its own device.
void grow_storage(c10::StorageImpl* storage, size_t nbytes) {
  if (nbytes <= storage->nbytes()) return;
  DeviceScope scope(storage->device().has_index() ? storage->device().index() : tls_device);
  at::native::resize_bytes_cpu(storage, nbytes);
}

const at::Tensor& npu_resize_(const at::Tensor& self, c10::IntArrayRef size,
                              c10::optional<at::MemoryFormat> memory_format) {
  auto* impl = self.unsafeGetTensorImpl();
  impl->set_sizes_contiguous(size);
  if (impl->numel() > 0) {
    size_t nbytes = at::detail::computeStorageNbytesContiguous(size, impl->dtype().itemsize(),
                                                                impl->storage_offset());
    grow_storage(impl->unsafe_storage().unsafeGetStorageImpl(), nbytes);
  }
  if (memory_format.has_value()) {
    TORCH_CHECK(*memory_format != at::MemoryFormat::Preserve, "Unsupported memory format ", *memory_format);
    impl->empty_tensor_restride(*memory_format);
  }
  return self;
}

at::Tensor& npu_set_storage_offset(at::Tensor& self, c10::Storage source, int64_t offset, c10::IntArrayRef size,
                                   c10::IntArrayRef stride) {
  TORCH_CHECK(source.device().type() == kNpu, "set_: expected an npu storage, got one on ", source.device());
  auto* impl = self.unsafeGetTensorImpl();
  impl->set_storage_keep_dtype(std::move(source));
  impl->set_storage_offset(offset);
  if (stride.data() != nullptr && !stride.empty()) {
    impl->set_sizes_and_strides(size, stride);
  } else {
    impl->set_sizes_contiguous(size);
  }
  if (impl->numel() > 0) {
    size_t nbytes = at::detail::computeStorageNbytes(impl->sizes(), impl->strides(), impl->dtype().itemsize(),
                                                     offset);
    grow_storage(impl->unsafe_storage().unsafeGetStorageImpl(), nbytes);
  }
  return self;
}

at::Tensor& npu_set_storage(at::Tensor& self, c10::Storage source) {
  int64_t n = static_cast<int64_t>(source.nbytes() / self.dtype().itemsize());
  return npu_set_storage_offset(self, std::move(source), 0, {n}, {});
}

// record_stream has no CPU kernel; on a synchronous emulated device it has nothing to do.
void npu_record_stream(at::Tensor& self, c10::Stream stream) {}

// ---------------------------------------------------------------- pinned memory ops

at::Tensor npu_pin_memory(const at::Tensor& self, c10::optional<c10::Device> device) {
  TORCH_CHECK(self.is_cpu(), "cannot pin '", self.toString(), "': only dense CPU tensors can be pinned");
  auto storage = c10::Storage(c10::Storage::use_byte_size_t(),
                              at::detail::computeStorageNbytes(self.sizes(), self.strides(),
                                                               self.dtype().itemsize()),
                              &g_pinned_allocator, /*resizable=*/false);
  auto out = at::empty({0}, self.options()).set_(storage, 0, self.sizes(), self.strides());
  out.copy_(self);
  return out;
}

bool npu_is_pinned(const at::Tensor& self, c10::optional<c10::Device> device) {
  return self.is_cpu() && self.storage().data() != nullptr && is_pinned_ptr(self.storage().data());
}

// torch 2.1 routes pin_memory() without a device to CUDA; like torch_npu, send it to the npu.
c10::DispatchKeySet pin_dispatch(const at::Tensor& self, c10::optional<c10::Device> device) {
  c10::Device target = device.value_or(c10::Device(kNpu));
  return c10::DispatchKeySet(c10::computeDispatchKey(c10::nullopt, self.layout(), target));
}

bool backend_select_is_pinned(const at::Tensor& self, c10::optional<c10::Device> device) {
  if (!self.is_cpu()) return false;
  return at::_ops::is_pinned::redispatch(pin_dispatch(self, device), self, device);
}

at::Tensor backend_select_pin_memory(const at::Tensor& self, c10::optional<c10::Device> device) {
  TORCH_CHECK(self.device().is_cpu(), "cannot pin '", self.toString(), "': only dense CPU tensors can be pinned");
  return at::_ops::_pin_memory::redispatch(pin_dispatch(self, device), self, device);
}

// ---------------------------------------------------------------- the boxed CPU fallback

struct AliasEntry {
  c10::Storage host;  // the CPU storage handed to the kernel
  c10::Storage npu;   // the npu storage it views
  void* data;
  size_t nbytes;
};

struct FallbackContext {
  std::vector<AliasEntry> aliases;
  std::vector<std::pair<c10::StorageImpl*, c10::Storage>> adopted;
  std::vector<c10::StorageImpl*> cpu_storages;                 // real CPU inputs: returned as they are
  std::vector<std::pair<at::Tensor, at::Tensor>> views;  // host view (kept alive) -> the npu tensor it views
  c10::optional<c10::Device> npu_device;
  bool cpu_nonscalar = false;
  c10::DeviceIndex target = -1;
};

std::string device_error(const c10::Device& a, const c10::Device& b) {
  return c10::str("Expected all tensors to be on the same device, but found at least two devices, ", a, " and ",
                  b, "!");
}

at::Tensor to_host(const at::Tensor& t, FallbackContext& ctx, bool cpu_allowed) {
  if (!t.defined()) return t;
  if (t.device().is_cpu()) {
    if (t.dim() > 0 && !cpu_allowed) ctx.cpu_nonscalar = true;
    if (t.has_storage()) ctx.cpu_storages.push_back(t.storage().unsafeGetStorageImpl());
    return t;
  }
  TORCH_CHECK(t.device().type() == kNpu, "the emulated npu cannot run a kernel on a ", t.device(), " tensor");
  if (!ctx.npu_device.has_value()) {
    ctx.npu_device = t.device();
  } else {
    TORCH_CHECK(*ctx.npu_device == t.device(), device_error(*ctx.npu_device, t.device()));
  }
  const c10::Storage& npu = t.storage();
  c10::Storage host;
  for (auto& e : ctx.aliases) {
    if (e.npu.unsafeGetStorageImpl() == npu.unsafeGetStorageImpl()) host = e.host;
  }
  if (!host) {
    host = host_storage(npu);
    ctx.aliases.push_back({host, npu, npu.mutable_data(), npu.nbytes()});
  }
  at::Tensor view = wrap(std::move(host), c10::DispatchKey::CPU, t);
  ctx.views.emplace_back(view, t);
  return view;
}

c10::IValue arg_to_host(const c10::IValue& v, FallbackContext& ctx, bool cpu_allowed) {
  if (v.isTensor()) return to_host(v.toTensor(), ctx, cpu_allowed);
  if (v.isTensorList()) {
    auto list = v.toTensorList();
    c10::List<at::Tensor> out;
    out.reserve(list.size());
    for (const at::Tensor& t : list) out.push_back(to_host(t, ctx, cpu_allowed));
    return out;
  }
  if (v.isList()) {  // e.g. Tensor?[] indices
    auto list = v.toList();
    bool has_tensor = false;
    for (const c10::IValue& e : list) has_tensor = has_tensor || e.isTensor();
    if (!has_tensor) return v;
    c10::impl::GenericList out(list.elementType());
    out.reserve(list.size());
    for (const c10::IValue& e : list) out.push_back(e.isTensor() ? c10::IValue(to_host(e.toTensor(), ctx, cpu_allowed)) : e);
    return out;
  }
  if (v.isDevice() && v.toDevice().type() == kNpu) {
    c10::Device d = v.toDevice();
    if (d.has_index()) check_index(d.index());
    if (ctx.target < 0) ctx.target = d.has_index() ? d.index() : tls_device;
    return c10::Device(c10::kCPU);
  }
  return v;
}

// The npu storage for a CPU storage the kernel returned: the viewed npu storage, or the adopted one.
c10::Storage npu_storage_for(const c10::Storage& host, FallbackContext& ctx) {
  c10::StorageImpl* key = host.unsafeGetStorageImpl();
  for (auto& e : ctx.aliases) {
    if (e.host.unsafeGetStorageImpl() == key) return e.npu;
  }
  for (auto& a : ctx.adopted) {
    if (a.first == key) return a.second;
  }
  c10::Storage npu = adopt_storage(host, ctx.target);
  ctx.adopted.emplace_back(key, npu);
  return npu;
}

at::Tensor to_npu(const at::Tensor& t, FallbackContext& ctx) {
  if (!t.defined() || !t.device().is_cpu()) return t;
  for (auto& v : ctx.views) {
    if (v.first.unsafeGetTensorImpl() == t.unsafeGetTensorImpl()) return v.second;  // an in-place or out= op returned its argument
  }
  if (!t.has_storage()) return t;
  c10::StorageImpl* key = t.storage().unsafeGetStorageImpl();
  if (std::find(ctx.cpu_storages.begin(), ctx.cpu_storages.end(), key) != ctx.cpu_storages.end()) return t;
  return wrap(npu_storage_for(t.storage(), ctx), c10::DispatchKey::PrivateUse1, t);
}

c10::IValue result_to_npu(const c10::IValue& v, FallbackContext& ctx) {
  if (v.isTensor()) return to_npu(v.toTensor(), ctx);
  if (v.isTensorList()) {
    auto list = v.toTensorList();
    c10::List<at::Tensor> out;
    out.reserve(list.size());
    for (const at::Tensor& t : list) out.push_back(to_npu(t, ctx));
    return out;
  }
  if (v.isList()) {
    auto list = v.toList();
    c10::impl::GenericList out(list.elementType());
    for (const c10::IValue& e : list) out.push_back(e.isTensor() ? c10::IValue(to_npu(e.toTensor(), ctx)) : e);
    return out;
  }
  if (v.isTuple()) {
    std::vector<c10::IValue> elems;
    for (const c10::IValue& e : v.toTupleRef().elements()) elems.push_back(result_to_npu(e, ctx));
    return c10::ivalue::Tuple::create(std::move(elems));
  }
  return v;
}

// After the kernel: an out= or set_ kernel may have grown a host storage or re-pointed a host view.
void sync_back(FallbackContext& ctx) {
  for (auto& e : ctx.aliases) {
    c10::StorageImpl* host = e.host.unsafeGetStorageImpl();
    if (host->mutable_data() != e.data || host->nbytes() != e.nbytes) {
      c10::StorageImpl* npu = e.npu.unsafeGetStorageImpl();
      c10::DeviceIndex dev = npu->device().has_index() ? npu->device().index() : tls_device;
      // The npu storage takes over the kernel's new memory (the old block is freed by the swap).
      npu->set_data_ptr_noswap(adopt_data(e.host, dev));
      npu->set_nbytes(host->nbytes());
      e.data = host->mutable_data();
      e.nbytes = host->nbytes();
    }
  }
  for (auto& v : ctx.views) {
    c10::TensorImpl* host = v.first.unsafeGetTensorImpl();
    c10::TensorImpl* npu = v.second.unsafeGetTensorImpl();
    if (host->storage().unsafeGetStorageImpl() != npu->storage().unsafeGetStorageImpl()) {
      c10::Storage target = npu_storage_for(host->storage(), ctx);
      if (target.unsafeGetStorageImpl() != npu->storage().unsafeGetStorageImpl()) {
        npu->set_storage_keep_dtype(target);
      }
    }
    if (!host->sizes().equals(npu->sizes()) || !host->strides().equals(npu->strides()) ||
        host->storage_offset() != npu->storage_offset()) {
      npu->set_sizes_and_strides(host->sizes(), host->strides());
      npu->set_storage_offset(host->storage_offset());
    }
  }
}

bool is_low_precision(at::ScalarType t) { return t == at::kHalf || t == at::kBFloat16; }

bool lacks_low_precision_kernel(const c10::Error& e) {
  std::string msg = e.what();
  return msg.find("not implemented for 'Half'") != std::string::npos ||
         msg.find("not implemented for 'BFloat16'") != std::string::npos ||
         msg.find("does not support Half") != std::string::npos;
}

std::mutex g_upcast_mutex;
std::unordered_set<std::string> g_upcast_ops;  // ops whose CPU kernel lacks a float16/bfloat16 version
std::mutex g_counts_mutex;
std::unordered_map<std::string, int64_t> g_fallback_counts;
std::atomic<bool> g_count_ops{false};

// Convolutions and matrix products in float16/bfloat16 run in float32 and are rounded back, even where
// the CPU has a kernel: torch 2.7's float16 CPU convolution is orders of magnitude slower, and the
// NPU's cube unit accumulates in float32 too. FLASHOCC_EMULATE_NPU_FP16_MATH=native keeps CPU kernels.
bool widen_heavy_ops() {
  static const bool widen = [] {
    const char* env = std::getenv("FLASHOCC_EMULATE_NPU_FP16_MATH");
    return !(env && std::string(env) == "native");
  }();
  return widen;
}

bool is_heavy_op(const std::string& name) {
  static const std::unordered_set<std::string> heavy = {
      "aten::convolution", "aten::convolution_backward", "aten::mm",  "aten::addmm",
      "aten::bmm",         "aten::baddbmm",              "aten::addbmm", "aten::_addmm_activation"};
  return heavy.count(name) > 0;
}

std::string op_key(const c10::OperatorHandle& op) {
  const auto& name = op.operator_name();
  return name.overload_name.empty() ? name.name : name.name + "." + name.overload_name;
}

// Reruns a kernel with its float16/bfloat16 tensors in float32 and rounds the results back.
void run_upcast(const c10::OperatorHandle& op, torch::jit::Stack* stack, std::vector<c10::IValue> args,
                at::ScalarType low) {
  const auto& schema = op.schema();
  struct Upcast {
    size_t arg;
    at::Tensor original;
    at::Tensor wide;
  };
  std::vector<Upcast> upcasts;
  std::vector<std::vector<int64_t>> low_shapes;
  auto widen = [&](const at::Tensor& t) -> at::Tensor {
    if (!t.defined() || !is_low_precision(t.scalar_type())) return t;
    low_shapes.push_back(t.sizes().vec());
    return t.to(at::kFloat);
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const c10::IValue& v = args[i];
    // a dtype argument naming the narrow type (sum(dtype=), softmax backward's input_dtype) widens too
    const std::string& name = schema.arguments()[i].name();
    bool dtype_arg = name == "dtype" || (name.size() > 6 && name.compare(name.size() - 6, 6, "_dtype") == 0);
    if (v.isInt() && dtype_arg && v.toInt() == static_cast<int64_t>(low)) {
      args[i] = static_cast<int64_t>(at::kFloat);
      continue;
    }
    if (v.isTensor()) {
      at::Tensor wide = widen(v.toTensor());
      if (!wide.is_same(v.toTensor())) upcasts.push_back({i, v.toTensor(), wide});
      args[i] = wide;
    } else if (v.isTensorList()) {
      c10::List<at::Tensor> out;
      for (const at::Tensor& t : v.toTensorList()) out.push_back(widen(t));
      args[i] = out;
    } else if (v.isList()) {
      auto list = v.toList();
      c10::impl::GenericList out(list.elementType());
      for (const c10::IValue& e : list) out.push_back(e.isTensor() ? c10::IValue(widen(e.toTensor())) : e);
      args[i] = out;
    }
  }
  for (auto& a : args) torch::jit::push(stack, std::move(a));
  op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), stack);

  // Arguments the kernel writes: copy the float32 result back into the float16 memory.
  for (auto& u : upcasts) {
    const auto* alias = schema.arguments()[u.arg].alias_info();
    if (alias && alias->isWrite()) {
      if (!u.original.sizes().equals(u.wide.sizes())) u.original.resize_(u.wide.sizes());
      u.original.copy_(u.wide);
    }
  }
  size_t n_returns = schema.returns().size();
  size_t floating = 0;
  for (size_t i = stack->size() - n_returns; i < stack->size(); ++i) {
    const c10::IValue& v = (*stack)[i];
    if (v.isTensor() && v.toTensor().defined() && v.toTensor().is_floating_point()) ++floating;
  }
  // A single floating result is the op's value: float16 again. With several, those shaped like a
  // float16 input are (conv/batch-norm gradients); statistics such as batch-norm means stay float32.
  auto narrow = [&](const at::Tensor& t) -> at::Tensor {
    if (!t.defined()) return t;
    for (auto& u : upcasts) {
      if (u.wide.unsafeGetTensorImpl() == t.unsafeGetTensorImpl()) return u.original;
    }
    if (t.scalar_type() != at::kFloat) return t;
    bool shaped_like_input = std::any_of(low_shapes.begin(), low_shapes.end(),
                                         [&](const std::vector<int64_t>& s) { return t.sizes().equals(s); });
    return (floating == 1 || shaped_like_input) ? t.to(low) : t;
  };
  for (size_t i = stack->size() - n_returns; i < stack->size(); ++i) {
    c10::IValue& v = (*stack)[i];
    if (v.isTensor()) {
      v = narrow(v.toTensor());
    } else if (v.isTensorList()) {
      c10::List<at::Tensor> out;
      for (const at::Tensor& t : v.toTensorList()) out.push_back(narrow(t));
      v = out;
    }
  }
}

bool is_index_op(const std::string& name) {
  return name == "aten::index" || name == "aten::index_put_" || name == "aten::index_put" ||
         name == "aten::_index_put_impl_" || name == "aten::_unsafe_index" || name == "aten::_unsafe_index_put";
}

// Runs `op` (whose arguments are on the stack) with its CPU kernel over the npu tensors' memory.
void run_on_host(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  const auto& schema = op.schema();
  const size_t n_args = schema.arguments().size();
  if (g_count_ops.load(std::memory_order_relaxed)) {
    std::lock_guard<std::mutex> lock(g_counts_mutex);
    ++g_fallback_counts[op_key(op)];
  }
  const bool index_op = is_index_op(schema.name());

  FallbackContext ctx;
  std::vector<c10::IValue> args = torch::jit::pop(*stack, n_args);
  at::ScalarType low = at::kFloat;
  for (size_t i = 0; i < n_args; ++i) {
    // Like CUDA, indexing takes CPU index tensors; everywhere else only CPU scalars may join.
    bool cpu_allowed = index_op && schema.arguments()[i].name() == "indices";
    args[i] = arg_to_host(args[i], ctx, cpu_allowed);
    if (args[i].isTensor() && args[i].toTensor().defined() && is_low_precision(args[i].toTensor().scalar_type()) &&
        low == at::kFloat) {
      low = args[i].toTensor().scalar_type();
    }
  }
  if (ctx.npu_device.has_value() && ctx.cpu_nonscalar) {
    TORCH_CHECK(false, device_error(*ctx.npu_device, c10::Device(c10::kCPU)));
  }
  if (ctx.npu_device.has_value()) ctx.target = ctx.npu_device->index();
  if (ctx.target < 0) ctx.target = tls_device;

  std::string key;
  bool upcast = false;
  if (low != at::kFloat) {
    key = op_key(op) + "/" + c10::toString(low);
    std::lock_guard<std::mutex> lock(g_upcast_mutex);
    upcast = g_upcast_ops.count(key) > 0;
    if (!upcast && widen_heavy_ops() && is_heavy_op(schema.name())) {
      g_upcast_ops.insert(key);
      upcast = true;
    }
  }
  if (upcast) {
    run_upcast(op, stack, std::move(args), low);
  } else {
    std::vector<c10::IValue> saved = (low != at::kFloat) ? args : std::vector<c10::IValue>{};
    const size_t depth = stack->size();
    for (auto& a : args) torch::jit::push(stack, std::move(a));
    try {
      op.redispatchBoxed(c10::DispatchKeySet(c10::DispatchKey::CPU), stack);
    } catch (const c10::Error& e) {
      if (low == at::kFloat || !lacks_low_precision_kernel(e)) throw;
      stack->resize(depth);
      {
        std::lock_guard<std::mutex> lock(g_upcast_mutex);
        g_upcast_ops.insert(key);
      }
      run_upcast(op, stack, std::move(saved), low);
    }
  }
  sync_back(ctx);
  const size_t n_returns = schema.returns().size();
  for (size_t i = stack->size() - n_returns; i < stack->size(); ++i) {
    (*stack)[i] = result_to_npu((*stack)[i], ctx);
  }
}

void npu_fallback(const c10::OperatorHandle& op, torch::jit::Stack* stack) { run_on_host(op, stack); }

// Convolutions reach other backends as *_overrideable ops (whose default throws): run the CPU path
// of aten::convolution / aten::convolution_backward instead, on the same memory.
void npu_convolution_overrideable(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  static const auto conv = c10::Dispatcher::singleton().findSchemaOrThrow("aten::convolution", "");
  run_on_host(conv, stack);  // same arguments
}

void npu_convolution_backward_overrideable(const c10::OperatorHandle& op, torch::jit::Stack* stack) {
  static const auto backward = c10::Dispatcher::singleton().findSchemaOrThrow("aten::convolution_backward", "");
  // (grad_output, input, weight, stride, padding, dilation, transposed, output_padding, groups, output_mask):
  // convolution_backward also takes bias_sizes, after weight
  std::vector<c10::IValue> args = torch::jit::pop(*stack, 10);
  const at::Tensor& weight = args[2].toTensor();
  int64_t bias = args[6].toBool() ? weight.size(1) * args[8].toInt() : weight.size(0);
  args.insert(args.begin() + 3, c10::IValue(std::vector<int64_t>{bias}));
  for (auto& a : args) torch::jit::push(stack, std::move(a));
  run_on_host(backward, stack);
}

// ---------------------------------------------------------------- device guard, hooks, timer

int g_event_token = 0;

struct NpuGuardImpl final : c10::impl::DeviceGuardImplInterface {
  c10::DeviceType type() const override { return kNpu; }
  c10::Device exchangeDevice(c10::Device d) const override {
    c10::Device old = getDevice();
    if (d.index() != old.index()) setDevice(d);
    return old;
  }
  c10::Device getDevice() const override { return c10::Device(kNpu, tls_device); }
  void setDevice(c10::Device d) const override {
    TORCH_CHECK(d.type() == kNpu, "expected an npu device, got ", d);
    if (d.has_index()) set_device(d.index());
  }
  void uncheckedSetDevice(c10::Device d) const noexcept override {
    if (d.has_index() && d.index() >= 0 && d.index() < device_count()) tls_device = d.index();
  }
  c10::Stream getStream(c10::Device d) const noexcept override { return c10::Stream(c10::Stream::DEFAULT, d); }
  c10::Stream getDefaultStream(c10::Device d) const override { return c10::Stream(c10::Stream::DEFAULT, d); }
  c10::Stream getStreamFromGlobalPool(c10::Device d, bool high_priority) const override {
    return c10::Stream(c10::Stream::DEFAULT, d);
  }
  c10::Stream exchangeStream(c10::Stream s) const noexcept override {
    return c10::Stream(c10::Stream::DEFAULT, s.device());
  }
  c10::DeviceIndex deviceCount() const noexcept override { return device_count(); }
  // Work is synchronous: events complete when recorded.
  void record(void** event, const c10::Stream& stream, const c10::DeviceIndex device_index,
              const c10::EventFlag flag) const override {
    *event = &g_event_token;
  }
  void block(void* event, const c10::Stream& stream) const override {}
  bool queryEvent(void* event) const override { return true; }
  void destroyEvent(void* event, const c10::DeviceIndex device_index) const noexcept override {}
  bool queryStream(const c10::Stream& stream) const override { return true; }
  void synchronizeStream(const c10::Stream& stream) const override {}
  void recordDataPtrOnStream(const c10::DataPtr& data_ptr, const c10::Stream& stream) const override {}
};

struct NpuHooks final : at::PrivateUse1HooksInterface {
  at::Device getDeviceFromPtr(void* data) const override { return c10::Device(kNpu, tls_device); }
#if EMU_TORCH_AT_LEAST(2, 3)
  bool isPinnedPtr(const void* data) const override { return is_pinned_ptr(data); }
  at::Allocator* getPinnedMemoryAllocator() const override { return &g_pinned_allocator; }
  bool hasPrimaryContext(c10::DeviceIndex device_index) const override { return true; }
#endif
#if EMU_TORCH_AT_LEAST(2, 7)
  // torch._C._get_accelerator() (barrier's device, torch.accelerator) asks these
  bool isBuilt() const override { return true; }
  bool isAvailable() const override { return device_count() > 0; }
  void init() const override {}
  c10::DeviceIndex deviceCount() const override { return device_count(); }
  void setCurrentDevice(c10::DeviceIndex device) const override { set_device(device); }
  c10::DeviceIndex getCurrentDevice() const override { return tls_device; }
  c10::DeviceIndex exchangeDevice(c10::DeviceIndex device) const override {
    c10::DeviceIndex old = tls_device;
    if (device >= 0) set_device(device);
    return old;
  }
  c10::DeviceIndex maybeExchangeDevice(c10::DeviceIndex device) const override { return exchangeDevice(device); }
  void resizePrivateUse1Bytes(const c10::Storage& storage, size_t newsize) const override {
    c10::StorageImpl* impl = storage.unsafeGetStorageImpl();
    DeviceScope scope(impl->device().has_index() ? impl->device().index() : tls_device);
    at::native::resize_bytes_cpu(impl, newsize);
  }
#endif
};

class NpuTimer : public c10d::Timer {
 public:
  explicit NpuTimer(c10::Device /*device*/) {}
  c10::optional<int64_t> measureDifference(Event start, Event end) override {
    int64_t a = getTimeRef(start), b = getTimeRef(end);
    if (a == c10d::kUnsetTime || b == c10d::kUnsetTime || b < a) return c10::nullopt;
    return b - a;
  }
};

}  // namespace emu

C10_REGISTER_GUARD_IMPL(PrivateUse1, emu::NpuGuardImpl);
REGISTER_ALLOCATOR(c10::DeviceType::PrivateUse1, &emu::g_allocator);

namespace c10d {
C10_REGISTER_TYPED_CLASS(TimerRegistry, c10::DeviceType::PrivateUse1, emu::NpuTimer);
}

TORCH_LIBRARY_IMPL(aten, PrivateUse1, m) {
  m.impl("empty.memory_format", &emu::npu_empty);
  m.impl("empty_strided", &emu::npu_empty_strided);
  m.impl("_copy_from", &emu::npu_copy_from);
  m.impl("_copy_from_and_resize", &emu::npu_copy_from_and_resize);
  m.impl("resize_", &emu::npu_resize_);
  m.impl("set_.source_Storage", &emu::npu_set_storage);
  m.impl("set_.source_Storage_storage_offset", &emu::npu_set_storage_offset);
  m.impl("as_strided", &at::native::as_strided_tensorimpl);
  m.impl("view", &at::native::view);
  m.impl("unfold", &at::native::unfold);
#if !EMU_TORCH_AT_LEAST(2, 4)
  m.impl("_reshape_alias", &at::native::_reshape_alias);
#endif
  m.impl("record_stream", &emu::npu_record_stream);
  m.impl("_pin_memory", &emu::npu_pin_memory);
  m.impl("is_pinned", &emu::npu_is_pinned);
  m.impl("convolution_overrideable",
         torch::CppFunction::makeFromBoxedFunction<&emu::npu_convolution_overrideable>());
  m.impl("convolution_backward_overrideable",
         torch::CppFunction::makeFromBoxedFunction<&emu::npu_convolution_backward_overrideable>());
}

TORCH_LIBRARY_IMPL(_, PrivateUse1, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&emu::npu_fallback>());
}

// ---------------------------------------------------------------- autocast on npu (as CUDA's lists)

// torch 2.1 names the overload macro KERNEL_PRIVATEUSEONE2; later ones take the overload as an argument.
#define EMU_AUTOCAST(OP, POLICY) KERNEL_PRIVATEUSEONE(OP, POLICY)
#ifdef KERNEL_PRIVATEUSEONE2
#define EMU_AUTOCAST2(OP, OVERLOAD, POLICY) KERNEL_PRIVATEUSEONE2(OP, OVERLOAD, POLICY)
#else
#define EMU_AUTOCAST2(OP, OVERLOAD, POLICY) KERNEL_PRIVATEUSEONE(OP, OVERLOAD, POLICY)
#endif

TORCH_LIBRARY_IMPL(aten, AutocastPrivateUse1, m) {
  // float16 (lower_precision_fp): convolutions and matrix products
  EMU_AUTOCAST(_convolution, lower_precision_fp)
  EMU_AUTOCAST(conv1d, lower_precision_fp)
  EMU_AUTOCAST(conv2d, lower_precision_fp)
  EMU_AUTOCAST(conv3d, lower_precision_fp)
  EMU_AUTOCAST(conv_tbc, lower_precision_fp)
  EMU_AUTOCAST(conv_transpose1d, lower_precision_fp)
  EMU_AUTOCAST2(conv_transpose2d, input, lower_precision_fp)
  EMU_AUTOCAST2(conv_transpose3d, input, lower_precision_fp)
  EMU_AUTOCAST(convolution, lower_precision_fp)
  EMU_AUTOCAST(prelu, lower_precision_fp)
  EMU_AUTOCAST(addmm, lower_precision_fp)
  EMU_AUTOCAST(addmv, lower_precision_fp)
  EMU_AUTOCAST(addr, lower_precision_fp)
  EMU_AUTOCAST(matmul, lower_precision_fp)
  EMU_AUTOCAST(einsum, lower_precision_fp)
  EMU_AUTOCAST(mm, lower_precision_fp)
  EMU_AUTOCAST(mv, lower_precision_fp)
  EMU_AUTOCAST(linear, lower_precision_fp)
  EMU_AUTOCAST(addbmm, lower_precision_fp)
  EMU_AUTOCAST(baddbmm, lower_precision_fp)
  EMU_AUTOCAST(bmm, lower_precision_fp)
  EMU_AUTOCAST(chain_matmul, lower_precision_fp)
  EMU_AUTOCAST(linalg_multi_dot, lower_precision_fp)
  // float32: ops that lose too much in float16
  EMU_AUTOCAST(acos, fp32)
  EMU_AUTOCAST(asin, fp32)
  EMU_AUTOCAST(cosh, fp32)
  EMU_AUTOCAST(erfinv, fp32)
  EMU_AUTOCAST(exp, fp32)
  EMU_AUTOCAST(expm1, fp32)
  EMU_AUTOCAST(log, fp32)
  EMU_AUTOCAST(log10, fp32)
  EMU_AUTOCAST(log2, fp32)
  EMU_AUTOCAST(log1p, fp32)
  EMU_AUTOCAST(reciprocal, fp32)
  EMU_AUTOCAST(rsqrt, fp32)
  EMU_AUTOCAST(sinh, fp32)
  EMU_AUTOCAST(tan, fp32)
  EMU_AUTOCAST2(pow, Tensor_Scalar, fp32)
  EMU_AUTOCAST2(pow, Tensor_Tensor, fp32)
  EMU_AUTOCAST2(pow, Scalar, fp32)
  EMU_AUTOCAST(softplus, fp32)
  EMU_AUTOCAST(layer_norm, fp32)
  EMU_AUTOCAST(native_layer_norm, fp32)
  EMU_AUTOCAST(group_norm, fp32)
  EMU_AUTOCAST(cosine_similarity, fp32)
  EMU_AUTOCAST(nll_loss, fp32)
  EMU_AUTOCAST(nll_loss2d, fp32)
  EMU_AUTOCAST(kl_div, fp32)
  EMU_AUTOCAST(l1_loss, fp32)
  EMU_AUTOCAST(smooth_l1_loss, fp32)
  EMU_AUTOCAST(huber_loss, fp32)
  EMU_AUTOCAST(mse_loss, fp32)
  EMU_AUTOCAST(binary_cross_entropy_with_logits, fp32)
  EMU_AUTOCAST(dist, fp32)
  EMU_AUTOCAST(cdist, fp32)
  EMU_AUTOCAST(renorm, fp32)
  EMU_AUTOCAST(logsumexp, fp32)
  // the widest input type
  EMU_AUTOCAST(addcdiv, promote)
  EMU_AUTOCAST(addcmul, promote)
  EMU_AUTOCAST(atan2, promote)
  EMU_AUTOCAST(bilinear, promote)
  EMU_AUTOCAST(cross, promote)
  EMU_AUTOCAST(dot, promote)
  EMU_AUTOCAST(grid_sampler, promote)
  EMU_AUTOCAST(index_put, promote)
  EMU_AUTOCAST(tensordot, promote)
  EMU_AUTOCAST(scatter_add, promote)
}

// ---------------------------------------------------------------- registrations made from Python

namespace emu {

struct SilentWarnings : c10::WarningHandler {
  void process(const c10::Warning&) override {}
};

std::vector<std::unique_ptr<torch::Library>> g_libraries;
std::vector<std::string> g_registration_notes;

// Registrations torch may already have (then it refuses a second one): made at run time, under a
// silenced warning handler (torch warns when a kernel replaces its own), each one's outcome noted.
std::vector<std::string> late_registrations() {
  static std::once_flag once;
  std::call_once(once, [] {
    SilentWarnings silent;
    c10::WarningUtils::WarningHandlerGuard guard(&silent);
    try {
      auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, "_", c10::DispatchKey::AutocastPrivateUse1,
                                                  __FILE__, __LINE__);
      lib->fallback(torch::CppFunction::makeFallthrough());
      g_libraries.push_back(std::move(lib));
      g_registration_notes.push_back("autocast fallthrough: registered");
    } catch (const c10::Error&) {
      g_registration_notes.push_back("autocast fallthrough: torch has one");
    }
    try {  // ops without autograd formulas (c10d's collectives), as torch does for CPU and CUDA
      auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, "_", c10::DispatchKey::AutogradPrivateUse1,
                                                  __FILE__, __LINE__);
      lib->fallback(torch::autograd::basicAutogradNotImplementedFallback());
      g_libraries.push_back(std::move(lib));
      g_registration_notes.push_back("autograd fallback: registered");
    } catch (const c10::Error&) {
      g_registration_notes.push_back("autograd fallback: torch has one");
    }
#if !EMU_TORCH_AT_LEAST(2, 3)
    try {
      auto lib = std::make_unique<torch::Library>(torch::Library::IMPL, "aten", c10::DispatchKey::BackendSelect,
                                                  __FILE__, __LINE__);
      lib->impl("is_pinned", &backend_select_is_pinned);
      lib->impl("_pin_memory", &backend_select_pin_memory);
      g_libraries.push_back(std::move(lib));
      g_registration_notes.push_back("pin_memory default device: npu");
    } catch (const c10::Error& e) {
      g_registration_notes.push_back(std::string("pin_memory default device: not set (") + e.what_without_backtrace() + ")");
    }
#endif
  });
  return g_registration_notes;
}

void register_hooks() {
  static NpuHooks* hooks = [] {
    auto* h = new NpuHooks();
    at::RegisterPrivateUse1HooksInterface(h);
    return h;
  }();
  (void)hooks;
}

py::dict memory_stats(c10::DeviceIndex device) {
  check_index(device);
  auto& s = g_stats[device];
  py::dict d;
  d["allocated"] = s.allocated.load();
  d["peak"] = s.peak.load();
  d["reserved"] = s.allocated.load();  // no caching: what is reserved is what is allocated
  d["peak_reserved"] = s.peak_reserved.load();
  d["allocations"] = s.allocations.load();
  return d;
}

void reset_peak(c10::DeviceIndex device) {
  check_index(device);
  auto& s = g_stats[device];
  s.peak.store(s.allocated.load());
  s.peak_reserved.store(s.allocated.load());
}

bool autocast_enabled() {
#if EMU_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(kNpu);
#else
  return at::autocast::is_privateuseone_enabled();
#endif
}

void set_autocast_enabled(bool enabled) {
#if EMU_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(kNpu, enabled);
#else
  at::autocast::set_privateuseone_enabled(enabled);
#endif
}

py::object autocast_dtype() {
#if EMU_TORCH_AT_LEAST(2, 4)
  at::ScalarType dtype = at::autocast::get_autocast_dtype(kNpu);
#else
  at::ScalarType dtype = at::autocast::get_autocast_privateuseone_dtype();
#endif
  return py::reinterpret_borrow<py::object>(reinterpret_cast<PyObject*>(torch::getTHPDtype(dtype)));
}

void set_autocast_dtype(py::object dtype_object) {
  TORCH_CHECK(THPDtype_Check(dtype_object.ptr()), "set_autocast_dtype expects a torch.dtype");
  at::ScalarType dtype = reinterpret_cast<THPDtype*>(dtype_object.ptr())->scalar_type;
#if EMU_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(kNpu, dtype);
#else
  at::autocast::set_autocast_privateuseone_dtype(dtype);
#endif
}

py::dict fallback_counts(bool reset) {
  std::lock_guard<std::mutex> lock(g_counts_mutex);
  py::dict d;
  for (auto& kv : g_fallback_counts) d[py::str(kv.first)] = kv.second;
  if (reset) g_fallback_counts.clear();
  return d;
}

std::vector<std::string> upcast_ops() {
  std::lock_guard<std::mutex> lock(g_upcast_mutex);
  std::vector<std::string> out(g_upcast_ops.begin(), g_upcast_ops.end());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace emu

void init_hccl(py::module& m);  // hccl.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "The kit's emulated Ascend NPU (PrivateUse1 on host memory).";
  m.def("device_count", &emu::device_count);
  m.def("current_device", &emu::current_device);
  m.def("set_device", &emu::set_device);
  m.def("memory_stats", &emu::memory_stats);
  m.def("reset_peak", &emu::reset_peak);
  m.def("late_registrations", &emu::late_registrations);
  m.def("register_hooks", &emu::register_hooks);
  m.def("host_view", &emu::host_view, "the CPU tensor over an npu tensor's memory");
  m.def("autocast_enabled", &emu::autocast_enabled);
  m.def("set_autocast_enabled", &emu::set_autocast_enabled);
  m.def("autocast_dtype", &emu::autocast_dtype);
  m.def("set_autocast_dtype", &emu::set_autocast_dtype);
  m.def("count_fallback_ops", [](bool on) { emu::g_count_ops.store(on); });
  m.def("fallback_counts", &emu::fallback_counts, py::arg("reset") = false);
  m.def("upcast_ops", &emu::upcast_ops);
  m.def("is_pinned_ptr", [](uintptr_t p) { return emu::is_pinned_ptr(reinterpret_cast<const void*>(p)); });
  m.attr("device_type") = static_cast<int>(emu::kNpu);
  m.attr("torch_version") = py::make_tuple(TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR);
  init_hccl(m);
}
