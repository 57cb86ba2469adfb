"""GET /v1/models (and /v1/models/<id>) in OpenAI's list shape."""
from flask import Blueprint, current_app, jsonify

from gateway.handlers.errors import ApiError

bp = Blueprint("models", __name__)


@bp.get("/v1/models")
def list_models():
    return jsonify({"object": "list", "data": current_app.extensions["gateway"].registry.listed()})


@bp.get("/v1/models/<path:model_id>")
def get_model(model_id):
    registry = current_app.extensions["gateway"].registry
    for entry in registry.listed():
        if entry["id"] == model_id:
            return jsonify(entry)
    model = registry.resolve(model_id)  # `provider/model`: routed though not listed, so it exists for the client
    if model is not None:
        return jsonify({**registry.listed_entry(model), "id": model_id})
    raise ApiError(404, f"The model `{model_id}` does not exist.", param="model", code="model_not_found")
