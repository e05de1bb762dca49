"""The reference app from the brief (point 1), as the tutorial wrote it: the baseline.

Deliberately unimproved: the model runs with autograd on (no ``no_grad``), torch keeps its
default thread count in every gunicorn worker, any upload error is a 500, and it has no
/health. The benchmark copies this file to ``app.py`` in a scratch directory next to the
``model.zip`` under test and serves it with plain ``gunicorn app:app``.
"""

import numpy as np
import torch
from flask import Flask, request
from flask_cors import CORS
from PIL import Image

app = Flask(__name__)
CORS(app)

model = torch.jit.load('model.zip')


@app.route('/predict', methods=['POST'])
def predict():
    # load image
    img = Image.open(request.files['file'].stream).convert('RGB').resize((224, 224))
    img = np.array(img)
    img = torch.FloatTensor(img.transpose((2, 0, 1)) / 255)
    # get predictions
    preds = model(img.unsqueeze(0)).squeeze()
    probas = torch.softmax(preds, axis=0)
    ix = torch.argmax(probas, axis=0)
    return {
        'label': model.labels[ix],
        'score': probas[ix].item()
    }
