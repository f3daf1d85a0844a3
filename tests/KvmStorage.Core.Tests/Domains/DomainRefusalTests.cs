using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using Xunit;

namespace KvmStorage.Core.Tests.Domains;

/// <summary>
/// Every change libvirt 9.0 refuses (each observed against libvirtd 9.0's qemu driver) is refused here with a typed error,
/// and the file on disk keeps its bytes and its mtime.
/// </summary>
public sealed class DomainRefusalTests
{
    public static TheoryData<string, string, string, Func<DomainDiskEditor, object>> Cases => new()
    {
        { "shareable read-write qcow2", "web01", DomainErrorIds.ShareableNeedsRawFormat, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.qcow2", Format = "qcow2", Settings = new() { Shareable = true } }) },
        { "shareable made writable on qcow2", "db01", DomainErrorIds.ShareableNeedsRawFormat, e => e.UpdateDisk("vda", new DiskUpdate { Settings = new() { ReadOnly = false } }) },
        { "io native with writeback", "web01", DomainErrorIds.NativeIoNeedsDirectCache, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Settings = new() { Io = "native", Cache = "writeback" } }) },
        { "io native with no cache mode", "web01", DomainErrorIds.NativeIoNeedsDirectCache, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Settings = new() { Io = "native" } }) },
        { "cache changed away from none under io native", "web01", DomainErrorIds.NativeIoNeedsDirectCache, e => e.UpdateDisk("vda", new DiskUpdate { Settings = new() { Cache = "writethrough" } }) },
        { "boot order with os boot dev", "web01", DomainErrorIds.BootOrderWithOsBoot, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Settings = new() { BootOrder = 1 } }) },
        { "boot order set on existing disk with os boot dev", "web01", DomainErrorIds.BootOrderWithOsBoot, e => e.UpdateDisk("vda", new DiskUpdate { Settings = new() { BootOrder = 1 } }) },
        { "boot order already used", "db01", DomainErrorIds.DuplicateBootOrder, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Settings = new() { BootOrder = 1 } }) },
        { "boot order zero or negative", "db01", DomainErrorIds.InvalidBootOrder, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Settings = new() { BootOrder = -2 } }) },
        { "duplicate target", "web01", DomainErrorIds.DuplicateDiskTarget, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Target = "vda" }) },
        { "duplicate target across buses", "web01", DomainErrorIds.DuplicateDiskTarget, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Target = "sda", Bus = "scsi" }) },
        { "partition digits in target", "web01", DomainErrorIds.InvalidDiskTarget, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Target = "vdb1" }) },
        { "uppercase target", "web01", DomainErrorIds.InvalidDiskTarget, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Target = "vdB" }) },
        { "unknown prefix", "web01", DomainErrorIds.InvalidDiskTarget, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Target = "xyz1" }) },
        { "ide beyond hdd", "web01", DomainErrorIds.IdeUnitsExhausted, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Bus = "ide", Target = "hde" }) },
        { "ide index from a non-hd name", "web01", DomainErrorIds.IdeUnitsExhausted, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Bus = "ide", Target = "sdf" }) },
        { "cdrom on virtio", "web01", DomainErrorIds.InvalidBusForDevice, e => e.AddDisk(new DiskSpec { Device = "cdrom", SourcePath = "/srv/a.iso", Bus = "virtio" }) },
        { "floppy on sata", "web01", DomainErrorIds.InvalidBusForDevice, e => e.AddDisk(new DiskSpec { Device = "floppy", SourcePath = "/srv/a.img", Bus = "sata" }) },
        { "disk on fdc", "web01", DomainErrorIds.InvalidBusForDevice, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Bus = "fdc" }) },
        { "lun on virtio", "web01", DomainErrorIds.InvalidBusForDevice, e => e.AddDisk(new DiskSpec { Device = "lun", SourcePath = "/dev/sdy", SourceIsBlockDevice = true, Format = "raw", Bus = "virtio" }) },
        { "lun on a file", "web01", DomainErrorIds.LunNeedsBlockSource, e => e.AddDisk(new DiskSpec { Device = "lun", SourcePath = "/srv/a.raw", Format = "raw" }) },
        { "writable cdrom", "web01", DomainErrorIds.ReadOnlyMedia, e => e.AddDisk(new DiskSpec { Device = "cdrom", SourcePath = "/srv/a.iso", Settings = new() { ReadOnly = false } }) },
        { "cdrom made writable", "web01", DomainErrorIds.ReadOnlyMedia, e => e.UpdateDisk("hdc", new DiskUpdate { Settings = new() { ReadOnly = false } }) },
        { "read-only sata disk", "web01", DomainErrorIds.ReadOnlyNotSupportedOnBus, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Bus = "sata", Settings = new() { ReadOnly = true } }) },
        { "read-only ide disk", "web01", DomainErrorIds.ReadOnlyNotSupportedOnBus, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.raw", Format = "raw", Bus = "ide", Target = "hdb", Settings = new() { ReadOnly = true } }) },
        { "media change on a hard disk", "web01", DomainErrorIds.NotRemovableMedia, e => e.ChangeMedia("vda", "/srv/a.iso") },
        { "eject a hard disk", "web01", DomainErrorIds.NotRemovableMedia, e => e.ChangeMedia("vda", null) },
        { "update unknown disk", "web01", DomainErrorIds.DiskNotFound, e => e.UpdateDisk("vdq", new DiskUpdate { Settings = new() { Cache = "none" } }) },
        { "remove unknown disk", "web01", DomainErrorIds.DiskNotFound, e => e.RemoveDisk("vdq") },
        { "disk without format", "web01", DomainErrorIds.DiskFormatRequired, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a.qcow2" }) },
        { "format removed", "web01", DomainErrorIds.DiskFormatRequired, e => e.UpdateDisk("vda", new DiskUpdate { Format = string.Empty }) },
        { "unknown format", "web01", DomainErrorIds.InvalidDiskFormat, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a", Format = "qcow3" }) },
        { "vhdx, which libvirt 9.0 does not know", "web01", DomainErrorIds.InvalidDiskFormat, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a", Format = "vhdx" }) },
        { "unknown cache mode", "web01", DomainErrorIds.InvalidDiskOption, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a", Format = "raw", Settings = new() { Cache = "fast" } }) },
        { "unknown discard mode", "web01", DomainErrorIds.InvalidDiskOption, e => e.UpdateDisk("vdc", new DiskUpdate { Settings = new() { Discard = "trim" } }) },
        { "unsafe serial", "web01", DomainErrorIds.InvalidDiskSerial, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a", Format = "raw", Settings = new() { Serial = "it's \"q\"" } }) },
        { "relative source", "web01", DomainErrorIds.InvalidDiskSource, e => e.AddDisk(new DiskSpec { SourcePath = "images/a.raw", Format = "raw" }) },
        { "disk without source", "web01", DomainErrorIds.InvalidDiskSource, e => e.AddDisk(new DiskSpec { Format = "raw" }) },
        { "volume source without pool", "web01", DomainErrorIds.InvalidDiskSource, e => e.AddDisk(new DiskSpec { Volume = "v", AsVolumeSource = true, Format = "raw" }) },
        { "unknown bus", "web01", DomainErrorIds.UnsupportedDiskBus, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a", Format = "raw", Bus = "xen" }) },
        { "unknown device", "web01", DomainErrorIds.UnsupportedDiskDevice, e => e.AddDisk(new DiskSpec { SourcePath = "/srv/a", Format = "raw", Device = "tape" }) },
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void Refused_change_leaves_the_file_untouched(string why, string domain, string errorId, Func<DomainDiskEditor, object> change)
    {
        using var host = new DomainTestHost(domain);
        string file = host.ConfigFile(domain);
        DateTime past = new(2024, 1, 2, 3, 4, 5, DateTimeKind.Utc);
        File.SetLastWriteTimeUtc(file, past);
        byte[] before = File.ReadAllBytes(file);

        var e = Assert.Throws<KvmStorageException>(() => host.Store.Edit(domain, d => change(new DomainDiskEditor(d))));
        Assert.True(errorId == e.ErrorId, $"{why}: expected {errorId}, got {e.ErrorId}: {e.Message}");
        Assert.False(string.IsNullOrWhiteSpace(e.Message));
        Assert.Equal(before, File.ReadAllBytes(file));
        Assert.Equal(past, File.GetLastWriteTimeUtc(file));
        Assert.Equal(new[] { DomainStore.LockFileName, domain + ".xml" }, Directory.GetFileSystemEntries(host.Paths.QemuConfigDir).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    [Fact]
    public void Refused_change_leaves_the_in_memory_definition_unchanged()
    {
        using var host = new DomainTestHost("web01");
        DomainDefinition web = host.Store.Get("web01");
        string before = web.ToFileText();
        var editor = new DomainDiskEditor(web);
        Assert.Throws<KvmStorageException>(() => editor.UpdateDisk("vda", new DiskUpdate { Settings = new() { Cache = "writeback", Serial = "X" } }));
        Assert.Throws<KvmStorageException>(() => editor.AddDisk(new DiskSpec { SourcePath = "/srv/a.qcow2", Format = "qcow2", Bus = "scsi", Settings = new() { Shareable = true } }));
        Assert.Equal(before, web.ToFileText());
    }

    [Fact]
    public void Ide_on_q35_is_refused()
    {
        using var host = new DomainTestHost("db01");
        string file = host.ConfigFile("db01");
        File.WriteAllText(file, File.ReadAllText(file).Replace("pc-i440fx-7.2", "pc-q35-7.2", StringComparison.Ordinal));
        var e = Assert.Throws<KvmStorageException>(() => host.Store.Edit("db01", d => new DomainDiskEditor(d).AddDisk(new DiskSpec { Device = "cdrom", Bus = "ide" })));
        Assert.Equal(DomainErrorIds.IdeNotSupportedByMachine, e.ErrorId);
    }

    [Fact]
    public void Cdrom_is_forced_read_only_and_may_be_empty()
    {
        using var host = new DomainTestHost("db01");
        DomainDisk cdrom = host.Store.Edit("db01", d => new DomainDiskEditor(d).AddDisk(new DiskSpec { Device = "cdrom" }));
        Assert.Equal(("sdb", "sata", true, true, "raw"), (cdrom.Target, cdrom.Bus, cdrom.ReadOnly, cdrom.IsEmpty, cdrom.Format));
        DomainTestHost.AssertValidates(host.ConfigFile("db01"));
    }
}
