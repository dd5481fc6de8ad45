"""System 2: the 7-10 Hz vision-language service that publishes latent task vectors.

- `instruction`: what counts as a valid instruction (shared by `dualsys say` and the service).
- `encoders`: the encoder registry (`builtin`: MiniLM text + MobileNetV2 vision + state, fused;
  `hf`: a transformers model from a local directory).
- `vision`, `text`, `fusion`: the pieces of the builtin encoder.
- `service`: the asyncio/uvloop process that paces steps and publishes `Latent` messages.
- `client`: sending an instruction to a running service and waiting for it to be adopted.

Importing this package imports no torch; the encoder modules do.
"""
