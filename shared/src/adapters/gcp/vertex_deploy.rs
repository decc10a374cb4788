//! Deploying to Vertex AI (placeholder).
