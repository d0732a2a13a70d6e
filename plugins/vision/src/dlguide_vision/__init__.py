"""dlguide-vision: image classification (``vision.classify``) and generation (``vision.gan``) as a dlguide plugin."""
