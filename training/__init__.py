"""Training the served model: data, network, loop, checks and pictures for the notebook.

The notebook (`train_notebook.ipynb`) tells the story; the code it runs lives here so that
tests can run the same steps. Images are loaded through the service's own decoding and
resizing (`classifier.images`), so the model is trained on exactly what it will be served.
Nothing here is needed to serve a model.
"""
