"""Export: the streaming LoRA merge and its checks, safetensors read and written in bands, GGUF
through llama.cpp, and the Ollama Modelfile."""
