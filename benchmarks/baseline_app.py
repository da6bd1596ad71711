"""Baseline for benchmarks/bench_server.py: the reranking endpoint a user would write by hand.

A plain FastAPI app with a sync handler: each request's (query, document) pairs
are tokenized with the transformers tokenizer (padded to the request's longest
pair, truncated at 512 tokens), run through the model in one pass, and passed
through a sigmoid. No batching across requests, no length sorting, no tuning.
The model loads when the module is imported, as in most tutorials.

    BASELINE_MODEL=benchmarks/.models/mini python -m uvicorn --app-dir benchmarks baseline_app:app --port 8001

POST /v1/rerank takes a Cohere-style body ({query, documents, top_n?,
return_documents?}) and answers {id, results: [{index, relevance_score,
document?}], meta}, best first. GET /health answers once the model is loaded.
"""

from __future__ import annotations

import os
import uuid

import torch
from fastapi import FastAPI
from pydantic import BaseModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

MODEL = os.environ.get("BASELINE_MODEL", "BAAI/bge-reranker-v2-m3")

tokenizer = AutoTokenizer.from_pretrained(MODEL)
model = AutoModelForSequenceClassification.from_pretrained(MODEL).eval()

app = FastAPI(title="baseline reranker")


class RerankRequest(BaseModel):
    query: str
    documents: list[str]
    top_n: int | None = None
    return_documents: bool = True
    model: str | None = None


@app.get("/health")
def health() -> dict:
    return {"status": "ok"}


@app.post("/v1/rerank")
def rerank(request: RerankRequest) -> dict:
    pairs = [(request.query, doc) for doc in request.documents]
    inputs = tokenizer(pairs, padding=True, truncation=True, max_length=512, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**inputs).logits.view(-1).float()
    scores = torch.sigmoid(logits).tolist()
    order = sorted(range(len(scores)), key=lambda i: scores[i], reverse=True)
    if request.top_n:
        order = order[: request.top_n]
    results = []
    for i in order:
        result = {"index": i, "relevance_score": scores[i]}
        if request.return_documents:
            result["document"] = {"text": request.documents[i]}
        results.append(result)
    return {
        "id": str(uuid.uuid4()),
        "results": results,
        "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}},
    }
