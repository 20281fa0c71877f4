"""Metering on WebSockets: OpenAI Realtime, Responses WebSocket mode, Gemini Live."""
