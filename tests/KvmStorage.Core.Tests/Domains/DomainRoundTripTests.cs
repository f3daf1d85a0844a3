using KvmStorage.Core.Domains;
using Xunit;

namespace KvmStorage.Core.Tests.Domains;

/// <summary>Loads files written by libvirtd 9.0 (Fixtures/, captured from an isolated daemon) and checks every write.</summary>
public sealed class DomainRoundTripTests
{
    [Theory]
    [InlineData("web01")]
    [InlineData("web01-commented")]
    [InlineData("db01")]
    public void Load_then_save_is_byte_identical(string fixture)
    {
        using var host = new DomainTestHost(fixture);
        string name = fixture.Split('-')[0];
        byte[] before = File.ReadAllBytes(host.ConfigFile(name));
        host.Store.Save(host.Store.Get(name));
        Assert.Equal(before, File.ReadAllBytes(host.ConfigFile(name)));
        Assert.Equal(UnixFileMode.UserRead | UnixFileMode.UserWrite, File.GetUnixFileMode(host.ConfigFile(name)));
    }

    [Fact]
    public void Reads_the_domain_and_its_disks()
    {
        using var host = new DomainTestHost("web01");
        DomainDefinition web = host.Store.Get("web01");
        Assert.Equal("web01", web.Name);
        Assert.Matches("^[0-9a-f-]{36}$", web.Uuid);
        Assert.Equal("pc-i440fx-7.2", web.MachineType);
        Assert.True(web.HasOsBootDevices);
        Assert.Equal(new[] { "vda", "vdc", "sda", "sdb", "hdc" }, web.Disks.Select(d => d.Target));
        Assert.Contains(web.Controllers, c => c.Type == "sata" && c.Index == 0);
        Assert.Contains(web.Controllers, c => c.Type == "pci" && c.Model == "pci-root");

        DomainDisk vda = web.Disks[0];
        Assert.Equal(("web01", "virtio", "disk", "file", "/var/lib/libvirt/images/web01-root.qcow2"), (vda.VMName, vda.Bus, vda.Device, vda.Type, vda.SourcePath));
        Assert.Equal(("qcow2", "none", "native", "unmap"), (vda.Format, vda.Cache, vda.Io, vda.Discard));
        Assert.False(vda.ReadOnly);
        Assert.Null(vda.BootOrder);

        DomainDisk vdc = web.Disks[1];
        Assert.Equal(("volume", "default", "web01-data.raw", "DATA-01"), (vdc.Type, vdc.SourcePool, vdc.SourceVolume, vdc.Serial));
        Assert.Null(vdc.SourcePath);

        Assert.True(web.Disks[2].Shareable);
        DomainDisk empty = web.Disks[3];
        Assert.True(empty.IsEmpty && empty.ReadOnly && empty.Device == "cdrom" && empty.SourcePath is null);
        Assert.False(web.Disks[4].IsEmpty);

        using var dbHost = new DomainTestHost("db01");
        DomainDefinition db = dbHost.Store.Get("db01");
        Assert.False(db.HasOsBootDevices);
        DomainDisk root = db.Disks[0];
        Assert.Equal((1, true, true, "DB-ROOT 01"), (root.BootOrder, root.ReadOnly, root.Shareable, root.Serial));
        Assert.Equal(("block", "lun", "/dev/sdz", "scsi"), (db.Disks[1].Type, db.Disks[1].Device, db.Disks[1].SourcePath, db.Disks[1].Bus));
    }

    [Theory]
    [InlineData("web01")]
    [InlineData("web01-commented")]
    public void Add_disk_writes_only_the_new_disk(string fixture)
    {
        using var host = new DomainTestHost(fixture);
        string before = host.Read("web01");
        DomainDisk added = host.Store.Edit("web01", d => new DomainDiskEditor(d).AddDisk(new DiskSpec
        {
            SourcePath = "/var/lib/libvirt/images/new.qcow2",
            Format = "qcow2",
            Settings = new DiskSettings
            {
                Cache = "none",
                Discard = "unmap",
            },
        }));
        Assert.Equal("vdb", added.Target);
        string after = host.Read("web01");
        var (plus, minus) = DomainTestHost.LineDiff(before, after);
        Assert.Empty(minus);
        Assert.Equal(
            DomainTestHost.Lines(
                "    <disk type='file' device='disk'>",
                "      <driver name='qemu' type='qcow2' cache='none' discard='unmap'/>",
                "      <source file='/var/lib/libvirt/images/new.qcow2'/>",
                "      <target dev='vdb' bus='virtio'/>",
                "    </disk>"),
            plus);

        // libvirt keeps disks sorted by target index within a bus: vdb goes between vda and vdc.
        int vda = after.IndexOf("web01-root.qcow2", StringComparison.Ordinal);
        int vdb = after.IndexOf("new.qcow2", StringComparison.Ordinal);
        int vdc = after.IndexOf("volume='web01-data.raw'", StringComparison.Ordinal);
        Assert.True(vda < vdb && vdb < vdc, after);
        DomainTestHost.AssertValidates(host.ConfigFile("web01"));
    }

    /// <summary>Where libvirtd 9.0 put disks attached to web01 (observed: vdb before vdc, sdd after sdb, scsi sdc last).</summary>
    [Theory]
    [InlineData("virtio", "vdb", "vda", "vdb", "vdc")]
    [InlineData("virtio", "vdd", "vda", "vdc", "vdd", "sda")]
    [InlineData("sata", "sdd", "sda", "sdb", "sdd", "hdc")]
    [InlineData("sata", "sdc", "sda", "sdb", "sdc", "hdc")]
    [InlineData("scsi", "sdc", "hdc", "sdc")]
    [InlineData("ide", "hda", "sdb", "hda", "hdc")]
    [InlineData("ide", "hdd", "hdc", "hdd")]
    [InlineData("usb", "sdf", "hdc", "sdf")]
    public void Add_disk_goes_where_libvirt_orders_it(string bus, string target, params string[] neighbours)
    {
        using var host = new DomainTestHost("web01");
        host.Store.Edit("web01", d => new DomainDiskEditor(d).AddDisk(new DiskSpec { SourcePath = "/srv/n.raw", Format = "raw", Bus = bus, Target = target }));
        var targets = host.Store.Get("web01").Disks.Select(d => d.Target).ToList();
        int at = targets.IndexOf(neighbours[0]);
        Assert.Equal(neighbours, targets.Skip(at).Take(neighbours.Length));
        if (bus is "scsi" or "usb")
        {
            Assert.Equal(target, targets[^1]);
        }
    }

    [Fact]
    public void Add_disk_with_every_setting_writes_libvirts_child_order()
    {
        using var host = new DomainTestHost("db01");
        string before = host.Read("db01");
        host.Store.Edit("db01", d => new DomainDiskEditor(d).AddDisk(new DiskSpec
        {
            SourcePath = "/var/lib/libvirt/images/ro.qcow2",
            Format = "qcow2",
            Settings = new DiskSettings
            {
                Cache = "directsync",
                Io = "native",
                Discard = "ignore",
                ReadOnly = true,
                Shareable = true,
                Serial = "RO-DISK_1",
                BootOrder = 2,
            },
        }));
        var (plus, minus) = DomainTestHost.LineDiff(before, host.Read("db01"));
        Assert.Empty(minus);
        Assert.Equal(
            DomainTestHost.Lines(
                "    <disk type='file' device='disk'>",
                "      <driver name='qemu' type='qcow2' cache='directsync' io='native' discard='ignore'/>",
                "      <source file='/var/lib/libvirt/images/ro.qcow2'/>",
                "      <target dev='vdb' bus='virtio'/>",
                "      <readonly/>",
                "      <shareable/>",
                "      <serial>RO-DISK_1</serial>",
                "      <boot order='2'/>",
                "    </disk>"),
            plus);
        DomainTestHost.AssertValidates(host.ConfigFile("db01"));
    }

    [Fact]
    public void Add_cdrom_volume_block_and_scsi_disks()
    {
        using var host = new DomainTestHost("web01");
        string before = host.Read("web01");
        host.Store.Edit("web01", d =>
        {
            var editor = new DomainDiskEditor(d);
            Assert.Equal("sdc", editor.AddDisk(new DiskSpec { Device = "cdrom", SourcePath = "/srv/iso/tools.iso" }).Target);
            Assert.Equal("vdb", editor.AddDisk(new DiskSpec { Pool = "default", Volume = "v.qcow2", AsVolumeSource = true, Format = "qcow2" }).Target);
            Assert.Equal("vdd", editor.AddDisk(new DiskSpec { SourcePath = "/dev/vg0/lv1", SourceIsBlockDevice = true, Format = "raw" }).Target);
            Assert.Equal("sdd", editor.AddDisk(new DiskSpec { SourcePath = "/srv/s.qcow2", Format = "qcow2", Bus = "scsi" }).Target);
            return 0;
        });
        string after = host.Read("web01");
        var (plus, minus) = DomainTestHost.LineDiff(before, after);
        Assert.Empty(minus);
        Assert.Contains("      <source file='/srv/iso/tools.iso'/>", plus);
        Assert.Contains("      <target dev='sdc' bus='sata'/>", plus);
        Assert.Contains("      <readonly/>", plus);
        Assert.Contains("    <disk type='volume' device='disk'>", plus);
        Assert.Contains("      <source pool='default' volume='v.qcow2'/>", plus);
        Assert.Contains("    <disk type='block' device='disk'>", plus);
        Assert.Contains("      <source dev='/dev/vg0/lv1'/>", plus);
        Assert.Contains("      <target dev='sdd' bus='scsi'/>", plus);

        // virt-manager's choice for the first SCSI disk, placed after the last controller as libvirt does.
        Assert.Contains("    <controller type='scsi' index='0' model='virtio-scsi'/>", plus);
        int sata = after.IndexOf("<controller type='sata'", StringComparison.Ordinal);
        int scsi = after.IndexOf("<controller type='scsi'", StringComparison.Ordinal);
        int iface = after.IndexOf("<interface", StringComparison.Ordinal);
        Assert.True(sata < scsi && scsi < iface);
        Assert.Equal(4, plus.Count(l => l == "    </disk>"));
        DomainTestHost.AssertValidates(host.ConfigFile("web01"));
    }

    [Fact]
    public void Update_disk_changes_only_its_lines()
    {
        using var host = new DomainTestHost("web01-commented");
        string before = host.Read("web01");
        DomainDisk updated = host.Store.Edit("web01", d => new DomainDiskEditor(d).UpdateDisk("vdc", new DiskUpdate
        {
            Settings = new DiskSettings
            {
                Discard = "unmap",
                Cache = "writeback",
                Serial = string.Empty,
            },
        }));
        Assert.Equal(("writeback", "unmap", (string?)null), (updated.Cache, updated.Discard, updated.Serial));
        var (plus, minus) = DomainTestHost.LineDiff(before, host.Read("web01"));
        Assert.Equal(DomainTestHost.Lines("      <driver name='qemu' type='raw'/>", "      <serial>DATA-01</serial>"), minus);
        Assert.Equal(DomainTestHost.Lines("      <driver name='qemu' type='raw' cache='writeback' discard='unmap'/>"), plus);
        DomainTestHost.AssertValidates(host.ConfigFile("web01"));
    }

    [Fact]
    public void Update_disk_adds_flags_and_boot_order_in_place()
    {
        using var host = new DomainTestHost("db01");
        string before = host.Read("db01");
        host.Store.Edit("db01", d => new DomainDiskEditor(d).UpdateDisk("vda", new DiskUpdate { Settings = new() { BootOrder = 3, Serial = "NEW" } }));
        host.Store.Edit("db01", d => new DomainDiskEditor(d).UpdateDisk("vda", new DiskUpdate { Format = "raw", Settings = new() { ReadOnly = false, Shareable = false } }));
        string after = host.Read("db01");
        var (plus, minus) = DomainTestHost.LineDiff(before, after);
        Assert.Equal(DomainTestHost.Lines("      <driver name='qemu' type='qcow2'/>", "      <readonly/>", "      <shareable/>", "      <serial>DB-ROOT 01</serial>", "      <boot order='1'/>"), minus);
        Assert.Equal(DomainTestHost.Lines("      <boot order='3'/>", "      <driver name='qemu' type='raw'/>", "      <serial>NEW</serial>"), plus);
        Assert.Contains("<serial>NEW</serial>\n      <boot order='3'/>\n      <address type='pci'", after, StringComparison.Ordinal);
        DomainTestHost.AssertValidates(host.ConfigFile("db01"));
    }

    [Theory]
    [InlineData("web01")]
    [InlineData("web01-commented")]
    public void Remove_disk_removes_only_its_lines(string fixture)
    {
        using var host = new DomainTestHost(fixture);
        string before = host.Read("web01");
        DomainDisk removed = host.Store.Edit("web01", d => new DomainDiskEditor(d).RemoveDisk("sda"));
        Assert.Equal("/var/lib/libvirt/images/shared.raw", removed.SourcePath);
        var (plus, minus) = DomainTestHost.LineDiff(before, host.Read("web01"));
        Assert.Empty(plus);
        Assert.Equal(
            DomainTestHost.Lines(
                "    <disk type='file' device='disk'>",
                "      <driver name='qemu' type='raw'/>",
                "      <source file='/var/lib/libvirt/images/shared.raw'/>",
                "      <target dev='sda' bus='sata'/>",
                "      <shareable/>",
                "      <address type='drive' controller='0' bus='0' target='0' unit='0'/>",
                "    </disk>"),
            minus);
        DomainTestHost.AssertValidates(host.ConfigFile("web01"));
    }

    [Fact]
    public void Change_media_inserts_and_ejects()
    {
        using var host = new DomainTestHost("web01-commented");
        string before = host.Read("web01");
        host.Store.Edit("web01", d => new DomainDiskEditor(d).ChangeMedia("sdb", "/srv/iso/new.iso"));
        DomainDisk ejected = host.Store.Edit("web01", d => new DomainDiskEditor(d).ChangeMedia("hdc", null));
        Assert.True(ejected.IsEmpty);
        var (plus, minus) = DomainTestHost.LineDiff(before, host.Read("web01"));
        Assert.Equal(DomainTestHost.Lines("      <source file='/var/lib/libvirt/images/debian-12.iso'/>"), minus);
        Assert.Equal(DomainTestHost.Lines("      <source file='/srv/iso/new.iso'/>"), plus);
        Assert.Contains("<driver name='qemu' type='raw'/>\n      <source file='/srv/iso/new.iso'/>\n      <target dev='sdb'", host.Read("web01"), StringComparison.Ordinal);
        Assert.False(host.Store.Get("web01").FindDisk("sdb")!.IsEmpty);
        DomainTestHost.AssertValidates(host.ConfigFile("web01"));
    }

    [Fact]
    public void Ejecting_a_volume_cdrom_leaves_an_empty_file_drive()
    {
        using var host = new DomainTestHost("db01");
        DomainDisk ejected = host.Store.Edit("db01", d =>
        {
            var editor = new DomainDiskEditor(d);
            editor.AddDisk(new DiskSpec { Device = "cdrom", Pool = "isos", Volume = "d.iso", AsVolumeSource = true });
            return editor.ChangeMedia("sdb", null);
        });
        Assert.Equal(("file", true, (string?)null), (ejected.Type, ejected.IsEmpty, ejected.SourcePool));
        DomainTestHost.AssertValidates(host.ConfigFile("db01"));
    }

    [Fact]
    public void Text_and_metadata_are_escaped_as_libvirt_writes_them()
    {
        // virBufferEscapeString escapes both quotes in text; <metadata> goes through libxml2, which double-quotes.
        DomainDefinition d = DomainDefinition.Parse(
            "<domain type='kvm'><name>q</name><title>Bob's \"box\" &amp; co</title><metadata><m:x xmlns:m='urn:m' a='it&apos;s &quot;x&quot;'>1 &lt; 2 's'</m:x></metadata></domain>");
        string text = d.ToFileText();
        Assert.Contains("  <title>Bob&apos;s &quot;box&quot; &amp; co</title>\n", text, StringComparison.Ordinal);
        Assert.Contains("    <m:x xmlns:m=\"urn:m\" a=\"it's &quot;x&quot;\">1 &lt; 2 's'</m:x>\n", text, StringComparison.Ordinal);
        Assert.Equal(text, DomainDefinition.Parse(text).ToFileText());
    }

    [Theory]
    [InlineData("web01.xml")]
    [InlineData("web01-commented.xml")]
    [InlineData("db01.xml")]
    public void Captured_fixtures_validate(string file) => DomainTestHost.AssertValidates(DomainTestHost.FixturePath(file));
}
