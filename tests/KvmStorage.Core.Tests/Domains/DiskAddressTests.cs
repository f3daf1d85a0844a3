using System.Xml.Linq;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using Xunit;

namespace KvmStorage.Core.Tests.Domains;

/// <summary>
/// Target choice against drive addresses other disks hold, over domains as libvirt 9.0 wrote them (each fixture was
/// defined in libvirtd and read back with virsh dumpxml --inactive): a free name is not enough, its derived address
/// must be free too (virDomainDiskDefAssignAddress; duplicate addresses make libvirt refuse the definition).
/// </summary>
public sealed class DiskAddressTests
{
    public static TheoryData<string, string, string, string?> Choices => new()
    {
        // sdb holds scsi unit 0, which sda would derive: sdc (unit 2) is the first free one.
        { "scsigap", "scsi", "sdc", null },

        // hda holds ide unit 1 (hdb's), hdc is taken: hdd (bus 1 unit 1).
        { "scsigap", "ide", "hdd", null },

        // fda holds floppy unit 1 (fdb's) and no other name fits one controller: fdb, written at unit 0.
        { "scsigap", "fdc", "fdb", "controller=0 bus=0 target=0 unit=0" },
        { "scsigap", "virtio", "vdb", null },

        // sata and usb do not share scsi's addresses: sda on sata derives sata unit 0, which is free.
        { "scsigap", "sata", "sda", null },
        { "scsigap", "usb", "sda", null },

        // sda..sdf fill controller 0, the cdrom sdg sits on controller 1 unit 0 (sdh's): sdi.
        { "scsitwo", "scsi", "sdi", null },
        { "scsitwo", "sata", "sdh", null },

        // q35: the cdrom sdb holds sata unit 0 (sda's), sdd unit 2 (sdc's): sde.
        { "q35sata", "sata", "sde", null },
        { "q35sata", "scsi", "sda", null },
        { "q35sata", "usb", "sda", null },

        // hda..hdc are taken and hdd would derive hdb's unit: hdd written at the one free slot (bus 1 unit 0).
        { "idemixed", "ide", "hdd", "controller=0 bus=1 target=0 unit=0" },
    };

    [Theory]
    [MemberData(nameof(Choices))]
    public void ChoosesTheLowestNameWhoseAddressIsFree(string fixture, string bus, string expected, string? address)
    {
        DomainDefinition domain = Load(fixture);
        DiskPlacement placement = DiskTargetPlanner.Choose(bus, domain);
        Assert.Equal(expected, placement.Target);
        Assert.Equal(address, placement.Address?.ToString());
    }

    [Theory]
    [InlineData("scsi", 0, 0, 0, 0, 0)]
    [InlineData("scsi", 6, 0, 0, 0, 6)]
    [InlineData("scsi", 7, 1, 0, 0, 0)]
    [InlineData("scsi", 26, 3, 0, 0, 5)]
    [InlineData("sata", 5, 0, 0, 0, 5)]
    [InlineData("sata", 6, 1, 0, 0, 0)]
    [InlineData("ide", 1, 0, 0, 0, 1)]
    [InlineData("ide", 2, 0, 1, 0, 0)]
    [InlineData("ide", 3, 0, 1, 0, 1)]
    [InlineData("ide", 4, 1, 0, 0, 0)]
    [InlineData("fdc", 1, 0, 0, 0, 1)]
    [InlineData("fdc", 2, 1, 0, 0, 0)]
    public void DerivesAddressesAsLibvirt(string bus, int index, int controller, int busNumber, int target, int unit) =>
        Assert.Equal(new DriveAddress(controller, busNumber, target, unit), DriveAddress.Derive(bus, index));

    [Theory]
    [InlineData("virtio")]
    [InlineData("usb")]
    public void BusesWithoutDriveAddressesDeriveNone(string bus) => Assert.Null(DriveAddress.Derive(bus, 0));

    [Fact]
    public void AddDiskWritesTheChosenTargetAndOnlyTheNeededAddress()
    {
        using var host = new DomainTestHost("scsigap");
        DomainDisk scsi = host.Store.Edit("scsigap", d => new DomainDiskEditor(d).AddDisk(new DiskSpec { SourcePath = "/srv/n.raw", Format = "raw", Bus = "scsi" }));
        Assert.Equal("sdc", scsi.Target);
        DomainDisk floppy = host.Store.Edit("scsigap", d => new DomainDiskEditor(d).AddDisk(new DiskSpec { Device = "floppy" }));
        Assert.Equal("fdb", floppy.Target);

        XElement domain = XElement.Parse(host.Read("scsigap").Split("-->", 2)[1]);
        XElement sdc = domain.Descendants("disk").Single(d => (string?)d.Element("target")?.Attribute("dev") == "sdc");
        Assert.Null(sdc.Element("address"));
        XElement fdb = domain.Descendants("disk").Single(d => (string?)d.Element("target")?.Attribute("dev") == "fdb");
        Assert.Equal("<address type=\"drive\" controller=\"0\" bus=\"0\" target=\"0\" unit=\"0\" />", fdb.Element("address")!.ToString());

        // The existing virtio-scsi controller serves sdc: no controller is added.
        Assert.Single(domain.Descendants("controller"), c => (string?)c.Attribute("type") == "scsi");
    }

    [Fact]
    public void ScsiDiskOnAMissingControllerAddsVirtioScsiControllersUpToIt()
    {
        using var host = new DomainTestHost("q35sata");
        host.Store.Edit("q35sata", d => new DomainDiskEditor(d).AddDisk(new DiskSpec { SourcePath = "/srv/n.raw", Format = "raw", Bus = "scsi", Target = "sdh" }));
        XElement domain = XElement.Parse(host.Read("q35sata").Split("-->", 2)[1]);
        var scsi = domain.Descendants("controller").Where(c => (string?)c.Attribute("type") == "scsi").ToList();
        Assert.Equal(["0", "1"], scsi.Select(c => (string?)c.Attribute("index")));
        Assert.All(scsi, c => Assert.Equal("virtio-scsi", (string?)c.Attribute("model")));
    }

    public static TheoryData<string, string, string, string> Refusals => new()
    {
        // The two cases: libvirt said "Found duplicate drive address for disk with target name 'sda'".
        { "scsigap", "scsi", "sda", "sdb" },
        { "scsigap", "ide", "hdb", "hda" },
        { "scsigap", "fdc", "fdb", "fda" },
        { "q35sata", "sata", "sda", "sdb" },
        { "q35sata", "sata", "sdc", "sdd" },
        { "scsitwo", "scsi", "sdh", "sdg" },
    };

    [Theory]
    [MemberData(nameof(Refusals))]
    public void RefusesARequestedTargetWhoseAddressIsTaken(string fixture, string bus, string target, string holder)
    {
        using var host = new DomainTestHost(fixture);
        string before = host.Read(fixture);
        var e = Assert.Throws<KvmStorageException>(() => host.Store.Edit(fixture, d => new DomainDiskEditor(d).AddDisk(new DiskSpec
        {
            SourcePath = "/srv/n.raw",
            Format = "raw",
            Bus = bus,
            Target = target,
            Device = bus == "fdc" ? "floppy" : "disk",
        })));
        Assert.Equal(DomainErrorIds.DriveAddressInUse, e.ErrorId);
        Assert.Equal(ErrorKind.AlreadyExists, e.Kind);
        Assert.Contains($"disk '{holder}'", e.Message, StringComparison.Ordinal);
        Assert.Equal(before, host.Read(fixture));
    }

    [Fact]
    public void RefusesIdeWhenAllFourUnitsAreTaken()
    {
        var e = Assert.Throws<KvmStorageException>(() => DiskTargetPlanner.Choose("ide", Load("idefull")));
        Assert.Equal(DomainErrorIds.IdeUnitsExhausted, e.ErrorId);
    }

    [Fact]
    public void AcceptsAnIdeNameBeyondHddWithAnExplicitAddress()
    {
        DomainDefinition domain = Load("scsigap");
        domain.Element.Descendants("disk").Where(d => (string?)d.Element("target")?.Attribute("bus") == "ide").Remove();
        DomainDisk disk = new DomainDiskEditor(domain).AddDisk(new DiskSpec { SourcePath = "/srv/n.raw", Format = "raw", Bus = "ide", Target = "hde", Address = new DriveAddress(0, 1, 0, 0) });
        Assert.Equal("hde", disk.Target);
    }

    [Fact]
    public void RefusesAUsbDiskWhenNoPortIsFree()
    {
        // piix3-uhci has 2 ports: the usb disk sdk and the tablet hold them.
        DomainDefinition domain = Load("scsitwo");
        var e = Assert.Throws<KvmStorageException>(() => new DomainDiskEditor(domain).AddDisk(new DiskSpec { SourcePath = "/srv/n.raw", Format = "raw", Bus = "usb" }));
        Assert.Equal(DomainErrorIds.UsbPortsExhausted, e.ErrorId);
    }

    [Fact]
    public void ScsiHostDeviceAddressesAreTaken()
    {
        DomainDefinition domain = Load("q35sata");
        domain.Devices!.Add(XElement.Parse("<hostdev mode='subsys' type='scsi'><source><adapter name='scsi_host0'/><address bus='0' target='0' unit='0'/></source><address type='drive' controller='0' bus='0' target='0' unit='0'/></hostdev>"));
        // sda derives the host device's unit 0; sdb is the sata cdrom's name: sdc.
        Assert.Equal("sdc", DiskTargetPlanner.Choose("scsi", domain).Target);
    }

    [Fact]
    public void ChoosesAcrossThePersistentAndTheRunningDefinition()
    {
        DomainDefinition config = Load("q35sata");
        DomainDefinition live = Load("q35sata");
        live.Devices!.Add(XElement.Parse("<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/srv/l.raw'/><target dev='sdf' bus='sata'/><address type='drive' controller='0' bus='0' target='0' unit='4'/></disk>"));

        // sde derives unit 4, which the running VM's sdf holds; sdf is its name: sdg (controller 1 unit 0).
        Assert.Equal("sdg", DiskTargetPlanner.Choose("sata", config, live).Target);
    }

    private static DomainDefinition Load(string fixture) => DomainDefinition.Load(DomainTestHost.FixturePath(fixture + ".xml"));
}
