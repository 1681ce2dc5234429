"""The guidance step: manual retrieval for the inspection's defect, a generator's four sections, feedback.

Generators live in the registry "generators" (name -> backend), loaded once at startup. The admin
catalog's model settings list availability through app.ml.guidance.factory.available_generators(models_dir,
openai_*): "extractive" always; a preset when its weights are under models/llm/; "openai:<model>" when
Settings.openai_base_url and openai_model are set. Workers may use the default generator and the ones in
ModelSetting.allowed_generators; admins any available one.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from PIL import Image
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.catalog.service import get_model_settings
from app.core.errors import (
    DomainError,
    NotFoundError,
    PermissionDeniedError,
    ValidationFailedError,
)
from app.core.i18n import current_language, translate, translate_reason
from app.core.services import Services
from app.db.base import utcnow
from app.db.tables import DefectType, Inspection, Manual, Product, User
from app.inspection import outcome as outcome_service
from app.inspection.guidance.labels import fallback_reason_label, generator_label
from app.inspection.guidance.presentation import marked_segments
from app.inspection.guidance.schemas import GeneratorRead, GuidanceCreate, GuidanceEvent, GuidanceRead
from app.inspection.service import get_inspection, load_image
from app.integrations import service as integrations_service
from app.manuals.indexing import MANUALS
from app.manuals.sections import find_section
from app.ml.grounding import ground_result
from app.ml.guidance.extractive import ExtractiveGenerator
from app.ml.guidance.factory import available_generators, create_generator
from app.ml.guidance.fallback import generate_with_fallback, stream_with_fallback
from app.ml.guidance.openai_http import OpenAICompatibleGenerator
from app.ml.guidance.types import (
    Generator,
    GeneratorInfo,
    GuidanceRequest,
    GuidanceResult,
    GuidanceSections,
    StreamingGenerator,
)
from app.ml.registry import RegistryKey
from app.ml.retriever import RetrievalQuery, sections_to_passages

logger = logging.getLogger(__name__)

GENERATORS = RegistryKey[dict[str, Generator]]("generators")
EXTRACTIVE = "extractive"
_PASSAGES_PER_SECTION = 2


# ----- generators -----------------------------------------------------------------------------------------
def generator_infos(services: Services) -> list[GeneratorInfo]:
    """Every generator this server knows, with whether it can run here."""
    s = services.settings
    return available_generators(
        s.models_path,
        openai_base_url=s.openai_base_url or None,
        openai_model=s.openai_model or None,
        openai_vision=s.openai_is_vision,
        device=services.models.device,
    )


def _create(services: Services, name: str) -> Generator:
    s = services.settings
    return create_generator(
        name,
        s.models_path,
        device=services.models.device,
        timeout_s=s.llm_timeout_s,
        max_new_tokens=s.llm_max_new_tokens,
        openai_base_url=s.openai_base_url or None,
        openai_model=s.openai_model or None,
        openai_api_key=s.openai_api_key.get_secret_value() or None,
        openai_vision=s.openai_is_vision,
    )


def load_generators(services: Services) -> dict[str, Generator]:
    """Load every available generator once (local models too: fp16 on CUDA) into the registry."""
    loaded: dict[str, Generator] = {EXTRACTIVE: ExtractiveGenerator()}
    errors: list[str] = []
    for info in generator_infos(services):
        if info.name == EXTRACTIVE or not info.is_available:
            continue
        try:
            loaded[info.name] = _create(services, info.name)
        except Exception as exc:  # one broken model must not cost the others
            logger.exception("cannot load generator %s", info.name)
            errors.append(f"{info.name}: {exc}")
    services.models.swap(GENERATORS, loaded)
    if errors:
        services.models.set_error(GENERATORS, "; ".join(errors))
    return loaded


def _loaded(services: Services) -> dict[str, Generator]:
    """The loaded generators; without a startup load (e.g. load_models off) the ones that load instantly."""
    loaded = services.models.get(GENERATORS)
    if loaded is None:
        loaded = {EXTRACTIVE: ExtractiveGenerator()}
        for info in generator_infos(services):
            if info.kind == "openai" and info.is_available:
                loaded[info.name] = _create(services, info.name)
        services.models.swap(GENERATORS, loaded)
    return loaded


def _label(info: GeneratorInfo) -> str:
    return translate_reason(info.label)


def _reason(info: GeneratorInfo, *, is_loaded: bool, device: str, is_admin: bool) -> str:
    """Why a generator can or cannot be used, in the user's language.

    Workers get generic reasons (no server paths, no server addresses); admins get the details, with any
    credentials in the server address removed.
    """
    if info.kind == "extractive":
        return translate("guidance.reason.always")
    if info.kind == "openai":
        if not info.is_available:
            key = "guidance.reason.openai_not_configured" if is_admin else "security.generator_unavailable"
            return translate(key)
        if not is_admin:
            return translate("security.reason.openai_ready")
        return translate_reason(info.reason)  # the server's address, its credentials already removed
    if not info.is_available:
        if info.path is not None and not (info.path / "config.json").is_file():
            if not is_admin:
                return translate("security.reason.no_weights")
            return translate("guidance.reason.no_weights", path=str(info.path))
        if not is_admin:
            return translate("security.generator_unavailable")
        return translate("guidance.reason.unavailable", detail=translate_reason(info.reason))
    if not is_loaded:
        return translate("guidance.generator_not_loaded")
    return translate(
        "guidance.reason.local_ready" if device.startswith("cuda") else "guidance.reason.local_cpu"
    )


def list_generators(session: Session, services: Services, *, user: User) -> list[GeneratorRead]:
    """Every generator: available here or why not, the default, and whether this user may pick it."""
    model_settings = get_model_settings(session)
    loaded = _loaded(services)
    default = model_settings.default_generator if model_settings.default_generator in loaded else EXTRACTIVE
    allowed = {*(model_settings.allowed_generators or []), default, EXTRACTIVE}
    out: list[GeneratorRead] = []
    for info in generator_infos(services):
        is_loaded = info.name in loaded
        out.append(
            GeneratorRead(
                name=info.name,
                label=_label(info),
                kind=info.kind,
                available=info.is_available and is_loaded,
                reason=_reason(
                    info, is_loaded=is_loaded, device=services.models.device, is_admin=user.role == "admin"
                ),
                is_default=info.name == default,
                is_allowed=user.role == "admin" or info.name in allowed,
                is_loaded=is_loaded,
            )
        )
    return out


def _pick_generator(session: Session, services: Services, *, user: User, name: str | None) -> Generator:
    loaded = _loaded(services)
    model_settings = get_model_settings(session)
    if name is None or name == "":
        # An unusable default (weights removed, server not configured) is answered by the extractive
        # generator; prepare_guidance marks that answer as a fallback.
        return loaded.get(model_settings.default_generator) or loaded[EXTRACTIVE]
    infos = {i.name: i for i in generator_infos(services)}
    if name not in infos and name not in loaded:
        raise ValidationFailedError("errors.guidance_unknown_generator", name=name)
    allowed = {*(model_settings.allowed_generators or []), model_settings.default_generator, EXTRACTIVE}
    if user.role != "admin" and name not in allowed:
        raise PermissionDeniedError("errors.guidance_generator_not_allowed", name=name)
    generator = loaded.get(name)
    if generator is None:
        info = infos.get(name)
        is_admin = user.role == "admin"
        reason = (
            _reason(info, is_loaded=False, device=services.models.device, is_admin=is_admin) if info else ""
        )
        raise ValidationFailedError("errors.guidance_generator_unavailable", name=name, reason=reason)
    return generator


# ----- facts ----------------------------------------------------------------------------------------------
def _chosen_match(inspection: Inspection) -> dict[str, Any] | None:
    matches = (inspection.search_result or {}).get("matches") or []
    if inspection.chosen_image_id is None:
        return None
    return next((m for m in matches if m.get("image_id") == inspection.chosen_image_id), None)


def _resolve_subject(
    session: Session, inspection: Inspection, defect_type_id: int | None
) -> tuple[Product, DefectType | None, float | None]:
    """The product, the defect type (argument, else chosen match's, else the verdict's) and similarity."""
    chosen = _chosen_match(inspection)
    chosen_product = ((chosen or {}).get("product") or {}).get("id")
    chosen_defect = ((chosen or {}).get("defect_type") or {}).get("id")
    defect: DefectType | None = None
    if defect_type_id is not None:
        defect = session.get(DefectType, defect_type_id)
        if defect is None:
            raise NotFoundError("errors.defect_type_not_found", id=defect_type_id)
    product_id = (
        inspection.outcome_product_id
        or inspection.verdict_product_id
        or inspection.product_id
        or chosen_product
    )
    if product_id is None and defect is not None:
        product_id = defect.product_id
    if product_id is None:
        raise ValidationFailedError("errors.guidance_no_product")
    product = session.get(Product, product_id)
    if product is None:
        raise NotFoundError("errors.product_not_found", id=product_id)
    if defect is not None and defect.product_id != product.id:
        raise ValidationFailedError("errors.defect_type_other_product")
    if defect is None and inspection.outcome_label != "pending":
        # the fused outcome names the defect (normal and unknown name none)
        candidate = inspection.outcome_defect_type_id if inspection.outcome_label == "defect" else None
        found = session.get(DefectType, candidate) if candidate is not None else None
        defect = found if found is not None and found.product_id == product.id else None
    elif defect is None:
        candidate = chosen_defect if chosen_defect is not None else None
        if candidate is None and not inspection.is_unknown:
            candidate = inspection.verdict_defect_type_id
        found = session.get(DefectType, candidate) if candidate is not None else None
        defect = found if found is not None and found.product_id == product.id else None
    similarity = chosen.get("score") if chosen else inspection.verdict_score
    return product, defect, float(similarity) if similarity is not None else None


def _regions(inspection: Inspection) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for r in (inspection.anomaly_result or {}).get("regions") or []:
        try:
            out.append(
                {
                    "x": float(r["x"]),
                    "y": float(r["y"]),
                    "w": float(r.get("width", r.get("w", 0))),
                    "h": float(r.get("height", r.get("h", 0))),
                    "image_width": inspection.width,
                    "image_height": inspection.height,
                    "score": r.get("score"),
                }
            )
        except (KeyError, TypeError, ValueError):
            continue
    return out


@dataclass(frozen=True)
class PreparedGuidance:
    """Everything needed to generate and store one answer (built with the request's session)."""

    inspection_id: int
    request: GuidanceRequest
    generator: Generator
    product_id: int
    defect_type_id: int | None
    defect_name: str
    manual_names: dict[int, str]
    timeout_s: float
    retrieval_ms: int = 0
    # The default generator when it could not be used (the answer is then the extractive fallback).
    unusable_default: str | None = None
    user_id: int | None = None
    # "normal" or "unknown" when the answer follows such an outcome: it says so instead of quoting a defect
    plain_outcome: str | None = None


def prepare_guidance(
    session: Session, services: Services, *, inspection_id: int, user: User, body: GuidanceCreate
) -> PreparedGuidance:
    """Check the request (generator, defect type), gather the facts and retrieve the manual passages."""
    inspection = get_inspection(session, inspection_id=inspection_id)
    outcome_service.ensure_can_change(inspection, user)
    generator = _pick_generator(session, services, user=user, name=body.generator)
    default = get_model_settings(session).default_generator
    unusable_default = default if not body.generator and generator.name != default else None
    product, defect, similarity = _resolve_subject(session, inspection, body.defect_type_id)
    plain = inspection.outcome_label if body.defect_type_id is None else None
    plain_outcome = plain if plain in ("normal", "unknown") else None
    if plain_outcome is not None:
        generator = ExtractiveGenerator()  # nothing to write: the answer is the outcome's plain statement
    anomaly = inspection.anomaly_result or {}
    manuals = {
        m.id: m.file_name
        for m in session.scalars(
            select(Manual).where(Manual.product_id == product.id, Manual.status == "indexed")
        )
    }
    started = time.perf_counter()
    passages = []
    library = services.models.get(MANUALS)
    index = library.index_for(product.id) if library is not None else None
    notes: dict[str, str] = {}
    if not manuals:
        # Registered but not usable (pending, indexing, failed): say that, not "no manual registered".
        waiting = list(session.scalars(select(Manual.file_name).where(Manual.product_id == product.id)))
        if waiting:
            notes = {
                "cause": translate("manuals.guidance.not_ready_cause", manuals=", ".join(waiting[:5])),
                "action": translate("manuals.guidance.not_ready_action"),
                "prevention": translate("manuals.guidance.not_ready_prevention"),
            }
    if index is not None and manuals:
        # The manuals' own structure says which section answers for this defect type (the admin can
        # correct it); retrieval then keeps to that heading. No section for it: say so, quote nothing.
        lookup = find_section(session, product_id=product.id, defect_type_id=defect.id if defect else None)
        if defect is not None and lookup.has_structure and not lookup.title:
            notes = _no_section_notes(defect.name, lookup.titles)
        else:
            query = RetrievalQuery(
                product_id=product.id,
                defect_code="" if lookup.title else (defect.code if defect else ""),
                defect_name=lookup.title.replace(">", "›")
                if lookup.title
                else (defect.name if defect else ""),
                defect_description=defect.description if defect else "",
            )
            sections = index.retrieve_sections(query, per_section=_PASSAGES_PER_SECTION)
            # A manual deleted a moment ago may still be in an index a reader took: never cite it.
            passages = [p for p in sections_to_passages(sections) if int(p.manual_id) in manuals]
            if lookup.title:
                found = {p.kind for p in passages}
                notes = {
                    kind: translate(
                        "manuals.guidance.no_part",
                        section=lookup.title,
                        part=translate(f"manuals.guidance.parts.{kind}"),
                    )
                    for kind in ("cause", "action", "prevention")
                    if kind not in found
                }
    image_png: bytes | None = None
    if isinstance(generator, OpenAICompatibleGenerator) and generator.vision:
        buffer = io.BytesIO()
        Image.open(io.BytesIO(load_image(services.storage, inspection))).convert("RGB").save(buffer, "PNG")
        image_png = buffer.getvalue()
    request = GuidanceRequest(
        product_code=product.code,
        product_name=product.name,
        defect_code=defect.code if defect else "",
        defect_name=defect.name if defect else "",
        defect_description=defect.description if defect else "",
        is_unknown=defect is None,
        similarity=similarity,
        anomaly_score=inspection.anomaly_score,
        anomaly_threshold=anomaly.get("threshold"),
        is_anomaly=inspection.is_anomaly,
        regions=_regions(inspection),
        passages=passages,
        image_png=image_png,
        manual_notes=notes,
        language=current_language.get(),
    )
    return PreparedGuidance(
        inspection_id=inspection.id,
        request=request,
        generator=generator,
        product_id=product.id,
        defect_type_id=defect.id if defect else None,
        defect_name=defect.name if defect else "",
        manual_names=manuals,
        timeout_s=services.settings.llm_timeout_s,
        retrieval_ms=int((time.perf_counter() - started) * 1000),
        unusable_default=unusable_default,
        user_id=user.id,
        plain_outcome=plain_outcome,
    )


def _no_section_notes(defect_name: str, titles: tuple[str, ...]) -> dict[str, str]:
    """The honest answer when the product's manuals have sections, but none for this defect."""
    listed = ", ".join(titles[:12]) + (" …" if len(titles) > 12 else "")
    return {
        "cause": translate("manuals.guidance.no_section_cause", defect=defect_name, sections=listed),
        "action": translate("manuals.guidance.no_section_action"),
        "prevention": translate("manuals.guidance.no_section_prevention"),
    }


# ----- result and storage ---------------------------------------------------------------------------------
def _plain_result(prepared: PreparedGuidance, result: GuidanceResult) -> GuidanceResult:
    """A normal or unknown outcome's answer: the outcome said plainly, no defect section quoted."""
    label = prepared.plain_outcome
    request = prepared.request
    score = f"{request.anomaly_score:.3f}" if request.anomaly_score is not None else "-"
    threshold = f"{request.anomaly_threshold:.3f}" if request.anomaly_threshold is not None else "-"
    sections = GuidanceSections(
        status=translate(
            f"outcome.guidance.{label}.status", product=request.product_name, score=score, threshold=threshold
        ),
        cause=translate(f"outcome.guidance.{label}.cause"),
        action=translate(f"outcome.guidance.{label}.action"),
        prevention=translate(f"outcome.guidance.{label}.prevention"),
    )
    return dataclasses.replace(result, sections=sections, citations=[])


def _to_read(prepared: PreparedGuidance, result: GuidanceResult) -> GuidanceRead:
    if prepared.plain_outcome is not None:
        result = _plain_result(prepared, result)
    if prepared.unusable_default and not result.is_fallback:
        result = dataclasses.replace(
            result,
            is_fallback=True,
            fallback_reason="unavailable",
            requested_generator=prepared.unusable_default,
        )
    result = ground_result(result, prepared.request)
    manual_sections = None
    if result.generator != EXTRACTIVE:
        manual = ground_result(ExtractiveGenerator().generate(prepared.request), prepared.request)
        manual_sections = manual.sections.as_dict()
    citations = []
    for c in result.citations:
        manual_id = int(c.manual_id)
        citations.append(
            {
                "ref": c.ref,
                "manual_id": manual_id,
                "page": c.page,
                "text": c.text,
                "section": c.section,
                "manual_name": prepared.manual_names.get(manual_id, ""),
                "url": f"/api/v1/manuals/{manual_id}/file#page={c.page}",
            }
        )
    return GuidanceRead.model_validate(
        {
            "sections": result.sections.as_dict(),
            "citations": citations,
            "generator": result.generator,
            "generator_label": generator_label(result.generator),
            "elapsed_ms": result.elapsed_ms + prepared.retrieval_ms,
            "retrieval_ms": prepared.retrieval_ms,
            "generation_ms": result.elapsed_ms,
            "is_fallback": result.is_fallback,
            "fallback_reason": result.fallback_reason,
            "requested_generator": result.requested_generator or prepared.generator.name,
            "product_id": prepared.product_id,
            "defect_type_id": prepared.defect_type_id,
            "defect_name": prepared.defect_name,
            # "no manual registered" only when none is; a manual without this defect says so itself
            "has_manual": bool(prepared.request.passages) or bool(prepared.manual_names),
            "manuals": sorted(set(prepared.manual_names.values())),
            "created_at": utcnow(),
            "unsupported": result.unsupported or {},
            "manual_sections": manual_sections,
        }
    )


def _store(session: Session, inspection_id: int, read: GuidanceRead, user_id: int | None = None) -> None:
    inspection = get_inspection(session, inspection_id=inspection_id)
    inspection.guidance = read.model_dump(mode="json")
    inspection.generator = read.generator
    inspection.timings_ms = {**(inspection.timings_ms or {}), "guidance": read.elapsed_ms}
    if inspection.status != "completed":
        inspection.status = "guided"
    outcome_service.record_event(
        session,
        inspection=inspection,
        kind="guidance",
        user_id=user_id,
        data={"generator": read.generator, "defect_type_id": read.defect_type_id},
    )
    session.commit()


def generate_guidance(
    session: Session, services: Services, *, inspection_id: int, user: User, body: GuidanceCreate
) -> GuidanceRead:
    """Write the four sections for the inspection and store them on it (LLM failures fall back)."""
    prepared = prepare_guidance(session, services, inspection_id=inspection_id, user=user, body=body)
    result = generate_with_fallback(
        prepared.generator, prepared.request, ExtractiveGenerator(), timeout_s=prepared.timeout_s
    )
    read = _to_read(prepared, result)
    _store(session, inspection_id, read, prepared.user_id)
    return read


def stream_guidance(services: Services, prepared: PreparedGuidance) -> Iterator[GuidanceEvent]:
    """The answer as events: "start", "delta" (text as written), then "result" (the stored answer).

    Runs after the request's session is gone (the response streams), so it stores with its own session.
    The API frames the events as server-sent events.
    """
    streams = not isinstance(prepared.generator, ExtractiveGenerator) and isinstance(
        prepared.generator, StreamingGenerator
    )
    yield GuidanceEvent("start", {"generator": prepared.generator.name, "streaming": streams})
    for item in stream_with_fallback(
        prepared.generator, prepared.request, ExtractiveGenerator(), timeout_s=prepared.timeout_s
    ):
        if isinstance(item, str):
            yield GuidanceEvent("delta", {"text": item})
            continue
        read = _to_read(prepared, item)
        try:
            with services.session_factory() as session:
                _store(session, prepared.inspection_id, read, prepared.user_id)
        except DomainError as exc:
            yield GuidanceEvent("error", {"detail": translate(exc.message_key, **exc.params)})
            return
        yield GuidanceEvent("result", read.model_dump(mode="json"))


# ----- feedback -------------------------------------------------------------------------------------------
def save_feedback(
    session: Session,
    *,
    inspection_id: int,
    user: User,
    action_taken: str,
    score: int,
    no_action: bool = False,
) -> Inspection:
    """Record what the worker did (or explicitly that nothing was done) and how useful the answer was (1-5).

    Completes (locks) the inspection. Only the owner or an admin, never on a completed inspection; the
    previous record stays in the history.
    """
    if not 1 <= score <= 5:
        raise ValidationFailedError("errors.guidance_bad_score", score=score)
    inspection = get_inspection(session, inspection_id=inspection_id)
    outcome_service.ensure_can_change(inspection, user)
    if not action_taken.strip() and not no_action:
        # An empty record used to read as "조치 완료": nothing done must be said, not left blank.
        raise ValidationFailedError("llm.action_required")
    now = utcnow()
    outcome_service.record_event(
        session,
        inspection=inspection,
        kind="feedback",
        user_id=user.id,
        data={
            "action_taken": action_taken.strip(),
            "score": score,
            "previous": {
                "action_taken": inspection.action_taken,
                "score": inspection.feedback_score,
                "by": inspection.feedback_by,
            },
        },
    )
    inspection.action_taken = action_taken.strip()
    inspection.feedback_score = score
    inspection.feedback_by = user.id
    inspection.feedback_at = now
    inspection.status = "completed"
    inspection.completed_at = now
    # The outbox rows go in the same commit as the record: no message without the record, nor the reverse.
    integrations_service.enqueue_event(session, inspection=inspection, event="inspection.completed")
    session.commit()
    return inspection


# ----- page -----------------------------------------------------------------------------------------------
def page_context(
    session: Session, services: Services, *, inspection_id: int, user: User, generator: str | None
) -> dict[str, Any]:
    """What the guidance page shows: images, the stored answer, the generator choices, the record."""
    inspection = get_inspection(session, inspection_id=inspection_id)
    choices = [g for g in list_generators(session, services, user=user) if g.available and g.is_allowed]
    default = next((g.name for g in choices if g.is_default), EXTRACTIVE)
    selected = generator if generator in {g.name for g in choices} else default
    anomaly = inspection.anomaly_result or {}
    reference = anomaly.get("reference_image") or {}
    guidance = inspection.guidance
    return {
        "inspection": inspection,
        "image_url": f"/api/v1/inspections/{inspection.id}/image",
        "reference_url": reference.get("image_url"),
        "overlay_url": anomaly.get("overlay_url"),
        "comparison_url": anomaly.get("comparison_url"),
        "generators": choices,
        "selected_generator": selected,
        "guidance": guidance,
        "auto_start": outcome_service.can_change(inspection, user)
        and (guidance is None or (generator is not None and generator != inspection.generator)),
        "can_change": outcome_service.can_change(inspection, user),
        "outcome": outcome_service.outcome_read(inspection),
        "section_names": ["status", "cause", "action", "prevention"],
        "generator_label": generator_label,
        "fallback_reason_label": fallback_reason_label,
        "marked_segments": marked_segments,
    }
