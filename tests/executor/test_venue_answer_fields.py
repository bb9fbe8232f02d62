"""Status answers of unusual shape, over HTTP from the Insiders fake to real PostgreSQL and Redis.

A status answer that says an order is final but not how much it filled (``filledSize`` missing, null or "") is no
answer: the executor asks again and books what the venue then reports. Read as "filled 0", a BUY the venue filled
ended CANCELLED ``NOT_FILLED``: its shares bought and never booked (no position, no exit copy, the follower's
exposure understated). A size written as an exponent or a JSON number is the same size; a status word the contract
does not list is asked about again, not read as an end."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import orjson
import pytest

from sim.httpserve import Request, Response
from sim.insiders import InsidersFake
from tests.executor.conftest import Harness, copy_to_its_end, rows, running_harness
from tradingtools.execution.v1 import execution_pb2 as epb

pytestmark = pytest.mark.integration
FINAL = ("confirmed", "cancelled")


class ForgetfulFake(InsidersFake):
    """The fake, rewriting its first ``forget`` final status answers: ``filledSize`` left out (``as_`` "missing"),
    replaced by ``as_``, or by what ``as_`` (a callable) makes of the true size; or the status word replaced by
    ``word``."""

    forget = 0
    as_: Any = "missing"
    word = ""

    def _forgetful(self, resp: Response) -> Response:
        if resp.status != 200 or self.forget <= 0:
            return resp
        body = orjson.loads(resp.body)
        if body.get("status") not in FINAL:
            return resp
        self.forget -= 1
        if self.word:
            body["status"] = self.word
        elif self.as_ == "missing":
            del body["filledSize"]
        elif callable(self.as_):
            body["filledSize"] = self.as_(Decimal(body["filledSize"]))
        else:
            body["filledSize"] = self.as_
        return Response(200, orjson.dumps(body), resp.content_type)

    def _get_by_client_id(self, request: Request, _param: str) -> Response:
        return self._forgetful(super()._get_by_client_id(request, _param))

    def _get_order(self, request: Request, order_id: str) -> Response:
        return self._forgetful(super()._get_order(request, order_id))


@pytest.fixture
async def forgetful(redis_url: str, db_url: str) -> AsyncIterator[Harness]:
    async with running_harness(redis_url, db_url, ForgetfulFake) as h:
        yield h


@pytest.mark.parametrize("as_", ["missing", None, ""])
async def test_a_final_answer_without_its_filled_size_is_asked_again_not_read_as_unfilled(
        forgetful: Harness, db_url: str, as_: Any) -> None:
    h = forgetful
    assert isinstance(h.fake, ForgetfulFake)
    h.fake.forget, h.fake.as_ = 2, as_  # two in a row: the order is asked again each time
    o, done = await copy_to_its_end(h)
    taken = h.fake.order(o.client_order_id)
    assert taken is not None and taken.filled_size > 0
    assert (done.type, done.reason) == (epb.ORDER_EVENT_TYPE_FILLED, "")
    assert h.fake.forget == 0  # the venue did leave the size out of both
    assert rows(db_url, "SELECT size FROM fills") == [(taken.filled_size,)]


@pytest.mark.parametrize("as_", [
    lambda d: f"{d:E}",  # 1.923000E+1
    lambda d: f"{d}{'0' * 30}" if "." in str(d) else f"{d}.{'0' * 30}",  # many decimals
    float,  # a JSON number
], ids=["exponent", "many-decimals", "json-number"])
async def test_a_filled_size_written_otherwise_is_booked_as_the_same_size(
        forgetful: Harness, db_url: str, as_: Any) -> None:
    h = forgetful
    assert isinstance(h.fake, ForgetfulFake)
    h.fake.forget, h.fake.as_ = 1_000, as_
    o, done = await copy_to_its_end(h)
    taken = h.fake.order(o.client_order_id)
    assert taken is not None and taken.filled_size > 0
    assert (done.type, Decimal(done.filled_size)) == (epb.ORDER_EVENT_TYPE_FILLED, taken.filled_size)
    assert rows(db_url, "SELECT size FROM fills") == [(taken.filled_size,)]
    assert rows(db_url, "SELECT size FROM positions") == [(taken.filled_size,)]


@pytest.mark.parametrize("word", ["settled", "expired", "RETRYING"])
async def test_a_status_word_the_contract_omits_is_asked_about_again(
        forgetful: Harness, db_url: str, word: str) -> None:
    h = forgetful
    assert isinstance(h.fake, ForgetfulFake)
    h.fake.forget, h.fake.word = 3, word
    o, done = await copy_to_its_end(h)
    taken = h.fake.order(o.client_order_id)
    assert taken is not None and taken.filled_size > 0
    assert h.fake.forget == 0  # the odd words were answered
    assert (done.type, Decimal(done.filled_size)) == (epb.ORDER_EVENT_TYPE_FILLED, taken.filled_size)
    assert rows(db_url, "SELECT size FROM fills") == [(taken.filled_size,)]
