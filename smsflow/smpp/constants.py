"""SMPP 3.4 / 5.0 numbers: command ids, command statuses, TLV tags and esm_class bits.

Values are from the SMPP v3.4 specification (Issue 1.2, sections 5.1.2, 5.1.3, 5.2.12 and 5.3.2) and the
SMPP v5.0 specification (section 4.7 and 4.8) for the 5.0-only additions, which are marked as such.
"""

from __future__ import annotations

from enum import IntEnum

RESPONSE_BIT = 0x80000000
"""Bit 31 of command_id: set on every response PDU (generic_nack included)."""

HEADER_LENGTH = 16
"""command_length + command_id + command_status + sequence_number, four octets each."""


class CommandId(IntEnum):
    """Member names are the PDU names of the spec (`CommandId.deliver_sm.name == "deliver_sm"`)."""

    generic_nack = 0x80000000
    bind_receiver = 0x00000001
    bind_receiver_resp = 0x80000001
    bind_transmitter = 0x00000002
    bind_transmitter_resp = 0x80000002
    query_sm = 0x00000003
    query_sm_resp = 0x80000003
    submit_sm = 0x00000004
    submit_sm_resp = 0x80000004
    deliver_sm = 0x00000005
    deliver_sm_resp = 0x80000005
    unbind = 0x00000006
    unbind_resp = 0x80000006
    replace_sm = 0x00000007
    replace_sm_resp = 0x80000007
    cancel_sm = 0x00000008
    cancel_sm_resp = 0x80000008
    bind_transceiver = 0x00000009
    bind_transceiver_resp = 0x80000009
    outbind = 0x0000000B
    enquire_link = 0x00000015
    enquire_link_resp = 0x80000015
    alert_notification = 0x00000102
    data_sm = 0x00000103
    data_sm_resp = 0x80000103


class CommandStatus(IntEnum):
    ESME_ROK = 0x00000000
    ESME_RINVMSGLEN = 0x00000001
    ESME_RINVCMDLEN = 0x00000002
    ESME_RINVCMDID = 0x00000003
    ESME_RINVBNDSTS = 0x00000004
    ESME_RALYBND = 0x00000005
    ESME_RINVPRTFLG = 0x00000006
    ESME_RINVREGDLVFLG = 0x00000007
    ESME_RSYSERR = 0x00000008
    ESME_RINVSRCADR = 0x0000000A
    ESME_RINVDSTADR = 0x0000000B
    ESME_RINVMSGID = 0x0000000C
    ESME_RBINDFAIL = 0x0000000D
    ESME_RINVPASWD = 0x0000000E
    ESME_RINVSYSID = 0x0000000F
    ESME_RCANCELFAIL = 0x00000011
    ESME_RREPLACEFAIL = 0x00000013
    ESME_RMSGQFUL = 0x00000014
    ESME_RINVSERTYP = 0x00000015
    ESME_RINVNUMDESTS = 0x00000033
    ESME_RINVDLNAME = 0x00000034
    ESME_RINVDESTFLAG = 0x00000040
    ESME_RINVSUBREP = 0x00000042
    ESME_RINVESMCLASS = 0x00000043
    ESME_RCNTSUBDL = 0x00000044
    ESME_RSUBMITFAIL = 0x00000045
    ESME_RINVSRCTON = 0x00000048
    ESME_RINVSRCNPI = 0x00000049
    ESME_RINVDSTTON = 0x00000050
    ESME_RINVDSTNPI = 0x00000051
    ESME_RINVSYSTYP = 0x00000053
    ESME_RINVREPFLAG = 0x00000054
    ESME_RINVNUMMSGS = 0x00000055
    ESME_RTHROTTLED = 0x00000058
    ESME_RINVSCHED = 0x00000061
    ESME_RINVEXPIRY = 0x00000062
    ESME_RINVDFTMSGID = 0x00000063
    ESME_RX_T_APPN = 0x00000064
    ESME_RX_P_APPN = 0x00000065
    ESME_RX_R_APPN = 0x00000066
    ESME_RQUERYFAIL = 0x00000067
    ESME_RINVOPTPARSTREAM = 0x000000C0
    ESME_ROPTPARNOTALLWD = 0x000000C1
    ESME_RINVPARLEN = 0x000000C2
    ESME_RMISSINGOPTPARAM = 0x000000C3
    ESME_RINVOPTPARAMVAL = 0x000000C4
    ESME_RDELIVERYFAILURE = 0x000000FE
    ESME_RUNKNOWNERR = 0x000000FF
    # SMPP 5.0 additions (section 4.7.6)
    ESME_RSERTYPUNAUTH = 0x00000100
    ESME_RPROHIBITED = 0x00000101
    ESME_RSERTYPUNAVAIL = 0x00000102
    ESME_RSERTYPDENIED = 0x00000103
    ESME_RINVDCS = 0x00000104
    ESME_RINVSRCADDRSUBUNIT = 0x00000105
    ESME_RINVDSTADDRSUBUNIT = 0x00000106


class TlvTag(IntEnum):
    """Member names are the parameter names of the spec (`TlvTag.message_payload`)."""

    dest_addr_subunit = 0x0005
    dest_network_type = 0x0006
    dest_bearer_type = 0x0007
    dest_telematics_id = 0x0008
    source_addr_subunit = 0x000D
    source_network_type = 0x000E
    source_bearer_type = 0x000F
    source_telematics_id = 0x0010
    qos_time_to_live = 0x0017
    payload_type = 0x0019
    additional_status_info_text = 0x001D
    receipted_message_id = 0x001E
    ms_msg_wait_facilities = 0x0030
    privacy_indicator = 0x0201
    source_subaddress = 0x0202
    dest_subaddress = 0x0203
    user_message_reference = 0x0204
    user_response_code = 0x0205
    source_port = 0x020A
    destination_port = 0x020B
    sar_msg_ref_num = 0x020C
    language_indicator = 0x020D
    sar_total_segments = 0x020E
    sar_segment_seqnum = 0x020F
    sc_interface_version = 0x0210
    callback_num_pres_ind = 0x0302
    callback_num_atag = 0x0303
    number_of_messages = 0x0304
    callback_num = 0x0381
    dpf_result = 0x0420
    set_dpf = 0x0421
    ms_availability_status = 0x0422
    network_error_code = 0x0423
    message_payload = 0x0424
    delivery_failure_reason = 0x0425
    more_messages_to_send = 0x0426
    message_state = 0x0427
    congestion_state = 0x0428  # 5.0
    ussd_service_op = 0x0501
    broadcast_channel_indicator = 0x0600  # 5.0
    broadcast_content_type = 0x0601  # 5.0
    broadcast_content_type_info = 0x0602  # 5.0
    broadcast_message_class = 0x0603  # 5.0
    broadcast_rep_num = 0x0604  # 5.0
    broadcast_frequency_interval = 0x0605  # 5.0
    broadcast_area_identifier = 0x0606  # 5.0
    broadcast_error_status = 0x0607  # 5.0
    broadcast_area_success = 0x0608  # 5.0
    broadcast_end_time = 0x0609  # 5.0
    broadcast_service_group = 0x060A  # 5.0
    billing_identification = 0x060B  # 5.0
    source_network_id = 0x060D  # 5.0
    dest_network_id = 0x060E  # 5.0
    source_node_id = 0x060F  # 5.0
    dest_node_id = 0x0610  # 5.0
    dest_addr_np_resolution = 0x0611  # 5.0
    dest_addr_np_information = 0x0612  # 5.0
    dest_addr_np_country = 0x0613  # 5.0
    display_time = 0x1201
    sms_signal = 0x1203
    ms_validity = 0x1204
    alert_on_message_delivery = 0x130C
    its_reply_type = 0x1380
    its_session_info = 0x1383


class MessageState(IntEnum):
    """message_state TLV / query_sm_resp values (SMPP 3.4 section 5.2.28)."""

    ENROUTE = 1
    DELIVERED = 2
    EXPIRED = 3
    DELETED = 4
    UNDELIVERABLE = 5
    ACCEPTED = 6
    UNKNOWN = 7
    REJECTED = 8
    SKIPPED = 9  # 5.0


def resp_id(command_id: int) -> int:
    """The command_id of the response to `command_id` (SMPP sets bit 31 on responses)."""
    return command_id | RESPONSE_BIT


def is_response_id(command_id: int) -> bool:
    return command_id & RESPONSE_BIT != 0


# esm_class (SMPP 3.4 section 5.2.12). Bits 1-0 messaging mode, bits 5-2 message type, bits 7-6 GSM features.
ESM_MESSAGING_MODE_MASK = 0x03
ESM_MESSAGE_TYPE_MASK = 0x3C
ESM_UDHI = 0x40
ESM_REPLY_PATH = 0x80


class EsmMessageType(IntEnum):
    """The message-type bits of a deliver_sm/data_sm esm_class (mask 0x3C)."""

    DEFAULT = 0x00
    SMSC_DELIVERY_RECEIPT = 0x04
    SME_DELIVERY_ACK = 0x08
    SME_MANUAL_ACK = 0x10
    CONVERSATION_ABORT = 0x18  # Korean CDMA
    INTERMEDIATE_NOTIFICATION = 0x20


def message_type(esm_class: int) -> int:
    """The message-type bits of esm_class; compare with `EsmMessageType` (unknown values are possible)."""
    return esm_class & ESM_MESSAGE_TYPE_MASK


def is_receipt(esm_class: int) -> bool:
    """True when a deliver_sm/data_sm is not a plain short message but a receipt or acknowledgement.

    Any message-type bit counts: SMSC delivery receipt (0x04), SME delivery ack (0x08), SME manual/user ack
    (0x10), conversation abort (0x18) and intermediate delivery notification (0x20). Checking only 0x04 lets
    intermediate notifications and SME acks through as if they were texts from a subscriber.
    """
    return esm_class & ESM_MESSAGE_TYPE_MASK != 0


def has_udhi(esm_class: int) -> bool:
    """True when short_message (or message_payload) starts with a User Data Header."""
    return esm_class & ESM_UDHI != 0
