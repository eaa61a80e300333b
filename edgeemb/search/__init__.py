"""Search: the document store, nearest-neighbour graphs, filters, the Index facade, keywords and hybrid retrieval."""
