using KvmStorage.Core.Domains;
using Xunit;

namespace KvmStorage.Core.Tests.Domains;

/// <summary>
/// The *.rewritten-by-libvirt.xml fixtures are what libvirtd 9.0 wrote after loading files produced by exactly these
/// edits (offline, daemon stopped), then redefining them through its API. The only lines libvirt added are the
/// addresses it assigns; everything else matches what the editor wrote, order included.
/// </summary>
public sealed class LibvirtAcceptanceTests
{
    [Fact]
    public void Web01_edits_match_libvirts_own_rewrite_except_addresses()
    {
        using var host = new DomainTestHost("web01");
        host.Store.Edit("web01", d =>
        {
            var e = new DomainDiskEditor(d);
            e.AddDisk(new DiskSpec { SourcePath = "/var/lib/libvirt/images/new.qcow2", Format = "qcow2", Settings = new() { Cache = "none", Io = "native" } });
            e.AddDisk(new DiskSpec { SourcePath = "/var/lib/libvirt/images/s.qcow2", Format = "qcow2", Bus = "scsi", Settings = new() { Serial = "S1" } });
            e.AddDisk(new DiskSpec { Device = "cdrom" });
            e.UpdateDisk("vdc", new DiskUpdate { Settings = new() { Discard = "unmap", Serial = string.Empty } });
            e.RemoveDisk("sda");
            e.ChangeMedia("hdc", null);
            return 0;
        });
        AssertOnlyAddressesDiffer(host.Read("web01"), DomainTestHost.FixtureText("web01.rewritten-by-libvirt.xml"), "    <controller type='scsi' index='0' model='virtio-scsi'/>");
    }

    [Fact]
    public void Db01_edit_matches_libvirts_own_rewrite_except_addresses()
    {
        using var host = new DomainTestHost("db01");
        host.Store.Edit("db01", d => new DomainDiskEditor(d).AddDisk(new DiskSpec { Pool = "default", Volume = "x.qcow2", AsVolumeSource = true, Format = "qcow2", Settings = new() { BootOrder = 2 } }));
        AssertOnlyAddressesDiffer(host.Read("db01"), DomainTestHost.FixtureText("db01.rewritten-by-libvirt.xml"));
    }

    private static void AssertOnlyAddressesDiffer(string ours, string libvirts, params string[] expandedByLibvirt)
    {
        var (plus, minus) = DomainTestHost.LineDiff(ours, libvirts);

        // A device written as <x .../> comes back as <x ...> + <address/> + </x> once libvirt gives it an address.
        Assert.Equal(DomainTestHost.Lines(expandedByLibvirt), minus);
        var expanded = expandedByLibvirt.Select(l => l.Replace("/>", ">", StringComparison.Ordinal)).ToList();
        Assert.All(plus, line => Assert.True(
            line.TrimStart().StartsWith("<address ", StringComparison.Ordinal) || expanded.Contains(line) || line.TrimStart().StartsWith("</controller>", StringComparison.Ordinal),
            $"libvirt wrote a line the editor did not: {line}"));
        Assert.NotEmpty(plus);
    }
}
