"""Lazy import hook: load ``tv_cpu_shim`` only when something imports torchvision (costs nothing otherwise)."""

import sys


class _TorchvisionCpuShimFinder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "torchvision":
            try:
                sys.meta_path.remove(cls)
            except ValueError:
                pass
            import tv_cpu_shim  # noqa: F401
        return None


sys.meta_path.insert(0, _TorchvisionCpuShimFinder)
