"""cxr: chest X-ray vision-language learning with LLM text encoders, on PyTorch Lightning."""

__version__ = "0.1.0"

__all__ = ["load", "CXRModel", "Preprocess"]


def __getattr__(name: str):
    # lazy: ``import cxr.data...`` must not import the API's dependencies (torch, transformers) up front
    if name in __all__:
        from cxr import api

        return getattr(api, name)
    raise AttributeError(f"module 'cxr' has no attribute {name!r}")
