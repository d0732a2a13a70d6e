"""dlguide-vision: image classification (and, later, image generation) as a dlguide plugin."""
