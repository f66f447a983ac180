"""torch_npu.contrib: only transfer_to_npu is emulated (import it to redirect CUDA calls to the npu)."""
