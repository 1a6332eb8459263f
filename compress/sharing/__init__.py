"""Deep Compression's weight sharing (Han et al. 2016): magnitude pruning of single weights, per-layer
k-means codebooks, optional centroid fine-tuning, and Huffman coding into one checksummed file.

Modules: `kmeans` (1-D k-means), `sparse` (weight pruning, relative offsets), `huffman` (canonical
codes, vectorised bit packing), `container` (the .dcz file), `finetune` (centroid training),
`share` (the `compress share` pipeline and its size report).
"""
