"""`compress share`: Deep Compression weight sharing + Huffman coding, and `--decompress` back."""

from __future__ import annotations

import json
from pathlib import Path

import click

from compress.cli.options import only_with, only_without
from compress.cli.params import DEVICE, OUT_DIR, FiniteFloat, GivenPath


@click.command("share", short_help="Weight sharing (k-means codebooks) + Huffman coding into OUT/model.dcz; --decompress back.")
@click.argument("model_dir", type=GivenPath(path_type=Path), required=False)
@click.option("--out", type=OUT_DIR, required=True,
              help="Output directory (shared model dir + model.dcz + share_report.json/.md).")
@click.option("--bits", default="conv=8,fc=5", show_default=True,
              help="Index bits per layer kind (k = 2^bits centroids); 'N' for all, 'layer.name=N' overrides.")
@click.option("--prune-weights", "prune", type=FiniteFloat(0, 1, max_open=True), default=None,
              help="Fraction S of each layer's smallest-magnitude weights to zero first (stored sparse).")
@click.option("--offset-bits", default="conv=8,fc=5", show_default=True,
              help="Width of the relative sparse offsets of pruned layers (the paper: 8 conv, 5 fc).")
@click.option("--finetune-epochs", type=click.IntRange(min=0), default=0, show_default=True,
              help="Epochs of centroid fine-tuning (gradients summed per cluster); needs --data.")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), default=1e-4, show_default=True,
              help="Plain-SGD learning rate for centroid fine-tuning.")
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True,
              help="Batch size of centroid fine-tuning.")
@click.option("--data", "data_spec", default=None,
              help="Dataset for accuracy at each step and fine-tuning (cifar10, folder, .tar.gz).")
@click.option("--train-limit", type=click.IntRange(min=1), default=None, help="Use N training images (stratified).")
@click.option("--test-limit", type=click.IntRange(min=1), default=None, help="Use N test images (stratified).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the image subsets and the fine-tuning order.")
@click.option("--device", type=DEVICE, default=None, help="cpu, cuda, ... (default: cuda when available).")
@click.option("--decompress", "dcz", type=GivenPath(dir_okay=False, path_type=Path), default=None,
              help="Restore the .dcz FILE into the model directory --out instead.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
def share(model_dir, out, bits, prune, offset_bits, finetune_epochs, lr, batch_size, data_spec, train_limit,
          test_limit, seed, device, dcz, as_json):
    """Weight sharing (Han et al. 2016): per-layer k-means codebooks, Huffman-coded into OUT/model.dcz.

    \b
      compress share runs/x/finetuned --out runs/x/shared --bits conv=8,fc=5 --prune-weights 0.5
      compress share --decompress runs/x/shared/model.dcz --out runs/x/restored
    """
    if dcz is not None:
        if model_dir is not None:
            raise click.UsageError("give either MODEL_DIR or --decompress FILE, not both")
        only_without("--decompress (it restores what the file holds)", dcz, "bits", "prune", "offset_bits",
                     "finetune_epochs", "lr", "batch_size", "data_spec", "train_limit", "test_limit", "seed", "device")
        from compress.stages._run import command_line
        from compress.sharing.share import decompress

        meta = decompress(dcz, out, command=command_line())
        click.echo(json.dumps({"model_dir": str(out), "params": meta["params"]}) if as_json
                   else f"{out}: restored {meta['arch']} ({meta['params']:,} params) from {dcz}")
        return
    if model_dir is None:
        raise click.UsageError("MODEL_DIR is required (or --decompress FILE)")
    if finetune_epochs and not data_spec:
        raise click.UsageError("--finetune-epochs needs --data")
    only_with("--data", data_spec, "train_limit", "test_limit", "device")
    only_with("--finetune-epochs", finetune_epochs, "lr", "batch_size", "train_limit")
    from compress.data.options import DataOptions
    from compress.stages._run import command_line
    from compress.sharing.share import ShareOptions, report_markdown, share_model

    data = DataOptions(data_spec, train_limit, test_limit, seed) if data_spec else None
    options = ShareOptions(bits=bits, offset_bits=offset_bits, prune=prune, finetune_epochs=finetune_epochs, lr=lr,
                           batch_size=batch_size)
    report = share_model(model_dir, out, options, data=data, device=device, seed=seed, command=command_line())
    if as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        click.echo(report_markdown(report), nl=False)
        click.echo(f"Wrote {report['compressed_file']} and {out}/share_report.json")
