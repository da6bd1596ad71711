"""The benchmarks' workload: the one in rerankd.bench.workload, which `rerankd bench` sends too.

Mixed-length documents as RAG retrieval hands them to a reranker: 20% short passages of 20-60 words, 60% medium
ones of 80-200 words, 20% long ones of 250-450 words, from the fixture tokenizer's training corpus.
"""

from rerankd.bench.workload import QUERY, mixed_documents

__all__ = ["QUERY", "mixed_documents"]
