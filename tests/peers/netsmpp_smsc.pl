#!/usr/bin/perl
# An SMSC built on Net::SMPP (CPAN, Debian libnet-smpp-perl), a peer nobody in this project wrote.
# Usage: netsmpp_smsc.pl PORT SYSTEM_ID PASSWORD MESSAGES_FILE
# MESSAGES_FILE: one deliver_sm per line: source \t dest \t data_coding \t esm_class \t short_message_hex
# Accepts one bind, pushes every deliver_sm (retrying temporary errors), prints "ACK n" / "STATUS n s",
# then unbinds. Prints "READY port" once listening.
use strict;
use warnings;
use Net::SMPP;
$| = 1;
my ($port, $sysid, $password, $file) = @ARGV;
my $listener = Net::SMPP->new_listen('127.0.0.1', port => $port, smpp_version => 0x34, timeout => 120)
  or die "cannot listen on $port: $!";
print "READY $port\n";
my $smpp = $listener->accept() or die "accept failed";
my $bind = $smpp->read_pdu() or die "no bind";
my $cmd = $bind->{cmd};
my $ok = ($bind->{system_id} eq $sysid && $bind->{password} eq $password);
if ($cmd == 0x00000009) {
  $smpp->bind_transceiver_resp(seq => $bind->{seq}, system_id => 'NETSMPP', status => $ok ? 0 : 0x0E);
} elsif ($cmd == 0x00000001) {
  $smpp->bind_receiver_resp(seq => $bind->{seq}, system_id => 'NETSMPP', status => $ok ? 0 : 0x0E);
} else {
  die sprintf("unexpected first PDU 0x%08X", $cmd);
}
die "bad credentials" unless $ok;
print "BOUND\n";
open(my $fh, '<', $file) or die "cannot open $file";
my $n = 0;
while (my $line = <$fh>) {
  chomp $line;
  next unless length $line;
  my ($src, $dst, $dc, $esm, $hex) = split /\t/, $line;
  my $sm = pack('H*', $hex);
  $n++;
  for my $try (1 .. 30) {
    my $resp = $smpp->deliver_sm(
      source_addr_ton => 1, source_addr_npi => 1, source_addr => $src,
      dest_addr_ton => 1, dest_addr_npi => 1, destination_addr => $dst,
      esm_class => $esm, data_coding => $dc, short_message => $sm,
    ) or die "no deliver_sm_resp";
    my $status = $resp->{status};
    if ($status == 0) { print "ACK $n\n"; last; }
    print "STATUS $n $status\n";
    die "permanent error $status" if $status != 0x64;
    sleep 1;
  }
}
$smpp->unbind();
print "DONE $n\n";
