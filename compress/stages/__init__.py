"""The stages over model directories, one module each, as the CLI runs them:

* `train`: an architecture from scratch, a model directory's weights trained on, or Scratch-B;
* `prune`: a PruneRequest (compress.request) or a replayed plan.json, BN statistics re-estimated;
* `finetune`: optionally distilled from a teacher;
* `slim`: sparse training → pruning → fine-tuning in one resumable run, with `summary` (summary.json/.md
  and plots);
* `export`: an nn.Module, a model directory or an ONNX file → parity-checked ONNX and TensorRT engines;
* `import_weights`: a model directory from a trained state dict.

`_run` holds what they share: the output guard and lock, the log, torchrun's sync and the training tail.
`compress.train`, `compress.finetune`, `compress.slim`, `compress.export` and `compress.import_weights` are
these functions (compress.__all__); `compress.prune` prunes an nn.Module (compress.plan).
"""
