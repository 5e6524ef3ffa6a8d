"""Evaluation metrics (NDB/JSD, FID/KID, LPIPS diversity, clustering scores) and the pretrained feature extractors they use."""
