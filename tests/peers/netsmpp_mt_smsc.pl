#!/usr/bin/perl
# An SMSC built on Net::SMPP (CPAN, Debian libnet-smpp-perl) that takes our submit_sm: the outbound side.
# Usage: netsmpp_mt_smsc.pl PORT SYSTEM_ID PASSWORD
# Serves one bind at a time (a reconnect gets the next accept) until it is killed. Every submit_sm is
# answered with submit_sm_resp and a message id (hex digits with letters, as many SMSCs write them); what
# Net::SMPP decoded is printed. On a transceiver bind, every submit that asked for a receipt
# (registered_delivery bit 0) gets a DELIVRD delivery receipt deliver_sm (esm_class 0x04), in turn in three
# forms carriers use: the text form and the TLVs, the text form only, the TLVs only.
# Output, one line each, tab-separated:
#   READY port | BOUND mode system_id | UNBOUND
#   SUBMIT message_id source dest data_coding esm_class registered_delivery message_hex
#   RECEIPT message_id form command_status      (the deliver_sm_resp of a receipt)
use strict;
use warnings;
use Net::SMPP;
use POSIX qw(strftime);
$| = 1;
my ($port, $sysid, $password) = @ARGV;
my $listener = Net::SMPP->new_listen('127.0.0.1', port => $port, smpp_version => 0x34)
  or die "cannot listen on $port: $!";
print "READY\t$port\n";

my $next_id = 0x0A1B2C00;
my @forms = ('both', 'text', 'tlv');
my $receipts = 0;

while (1) {
  my $smpp = $listener->accept() or next;
  serve($smpp);
  close($smpp);
}

sub serve {
  my ($smpp) = @_;
  my $bind = $smpp->read_pdu() or return;
  my $cmd = $bind->{cmd};
  my $ok = ($bind->{system_id} eq $sysid && $bind->{password} eq $password);
  my $mode;
  if ($cmd == 0x00000009) {
    $mode = 'transceiver';
    $smpp->bind_transceiver_resp(seq => $bind->{seq}, system_id => 'NETSMPP', status => $ok ? 0 : 0x0E);
  } elsif ($cmd == 0x00000002) {
    $mode = 'transmitter';
    $smpp->bind_transmitter_resp(seq => $bind->{seq}, system_id => 'NETSMPP', status => $ok ? 0 : 0x0E);
  } else {
    $smpp->generic_nack(seq => $bind->{seq}, status => 0x04);  # ESME_RINVBNDSTS: this SMSC takes MT only
    return;
  }
  return unless $ok;
  print "BOUND\t$mode\t$bind->{system_id}\n";
  my %receipt_of;  # deliver_sm seq -> [message id, form]
  while (my $pdu = $smpp->read_pdu()) {
    my $c = $pdu->{cmd};
    if ($c == 0x00000004) {  # submit_sm
      my $id = sprintf('%08X', $next_id++);
      my $octets = defined $pdu->{message_payload} ? $pdu->{message_payload} : $pdu->{short_message};
      $smpp->submit_sm_resp(seq => $pdu->{seq}, message_id => $id);
      print join("\t", 'SUBMIT', $id, $pdu->{source_addr}, $pdu->{destination_addr}, $pdu->{data_coding},
                 $pdu->{esm_class}, $pdu->{registered_delivery}, unpack('H*', $octets)), "\n";
      if ($mode eq 'transceiver' && ($pdu->{registered_delivery} & 1)) {
        my $form = $forms[$receipts++ % @forms];
        my $seq = send_receipt($smpp, $pdu, $id, $octets, $form);
        $receipt_of{$seq} = [$id, $form];
      }
    } elsif ($c == 0x80000005) {  # deliver_sm_resp
      my $r = delete $receipt_of{$pdu->{seq}} || ['?', '?'];
      print "RECEIPT\t$r->[0]\t$r->[1]\t$pdu->{status}\n";
    } elsif ($c == 0x00000015) {
      $smpp->enquire_link_resp(seq => $pdu->{seq});
    } elsif ($c == 0x80000015) {
      # our enquire_link answered: nothing to do
    } elsif ($c == 0x00000006) {
      $smpp->unbind_resp(seq => $pdu->{seq});
      last;
    } else {
      $smpp->generic_nack(seq => $pdu->{seq}, status => 0x03);  # ESME_RINVCMDID
    }
  }
  print "UNBOUND\n";
}

sub send_receipt {
  my ($smpp, $submit, $id, $octets, $form) = @_;
  my $now = strftime('%y%m%d%H%M', gmtime);
  (my $preview = substr($octets, 0, 20)) =~ s/[^\x20-\x7E]/?/g;
  my $text = "id:$id sub:001 dlvrd:001 submit date:$now done date:$now stat:DELIVRD err:000 text:$preview";
  my @tlvs = $form eq 'text' ? () : (receipted_message_id => "$id\0", message_state => pack('C', 2));
  return $smpp->deliver_sm(
    source_addr_ton => 1, source_addr_npi => 1, source_addr => $submit->{destination_addr},
    dest_addr_ton => 1, dest_addr_npi => 1, destination_addr => $submit->{source_addr},
    esm_class => 0x04, data_coding => 0,
    short_message => $form eq 'tlv' ? '' : $text,
    @tlvs,
    async => 1,
  );
}
