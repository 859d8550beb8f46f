"""Documents: reading, chunking, embedding, the Milvus vector store, ingestion and search."""
