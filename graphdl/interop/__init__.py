"""Neighbours graphdl works beside: DGL (:mod:`graphdl.interop.dgl`) and exports to DGL / PyG modules.

Nothing here is imported by graphdl's core: a peer library is loaded only when a converter, a
``lowering: dgl`` block or ``graphdl export`` asks for it.
"""
