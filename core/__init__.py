"""The shared kernel both pipelines use: the prompt format, base-model loading, adapter
folders and the domain types. Imports nothing of the product but `config` and `errors`."""
