using System.Globalization;
using System.Xml.Linq;

namespace KvmStorage.Core.Domains;

/// <summary>
/// A disk's place on a controller-based bus: <c>&lt;address type='drive' controller= bus= target= unit=/&gt;</c>.
/// Only scsi, sata, ide and fdc disks have one; virtio and usb disks do not.
/// </summary>
public readonly record struct DriveAddress(int Controller, int Bus, int Target, int Unit)
{
    // libvirt's qemu driver does not enable wide SCSI (only the VMware driver does), so a SCSI target name maps onto
    // 7 units per controller whatever the controller model (virDomainDefNew: scsiBusMaxUnit = SCSI_NARROW_BUS_MAX_CONT_UNIT).
    private const int ScsiUnitsPerController = 7;
    private const int SataUnitsPerController = 6;

    /// <summary>True for the buses whose disks libvirt places at a drive address: scsi, sata, ide and fdc.</summary>
    public static bool BusHasDriveAddress(string? bus) => bus is "scsi" or "sata" or "ide" or "fdc";

    /// <summary>
    /// The address libvirt gives a disk that has none, from its bus and target index (virDomainDiskDefAssignAddress):
    /// scsi 7 units per controller, sata 6, ide 2 buses of 2 units per controller, fdc 2 units per controller.
    /// Null for buses without drive addresses.
    /// </summary>
    public static DriveAddress? Derive(string? bus, int index) => bus switch
    {
        "scsi" => new DriveAddress(index / ScsiUnitsPerController, 0, 0, index % ScsiUnitsPerController),
        "sata" => new DriveAddress(index / SataUnitsPerController, 0, 0, index % SataUnitsPerController),
        "ide" => new DriveAddress(index / 4, (index % 4) / 2, 0, index % 2),
        "fdc" => new DriveAddress(index / 2, 0, 0, index % 2),
        _ => null,
    };

    /// <summary>
    /// The <c>&lt;address type='drive'&gt;</c> child of a device, or null when it has none (or another address type).
    /// Missing attributes read as 0, as libvirt reads them.
    /// </summary>
    public static DriveAddress? Read(XElement device)
    {
        ArgumentNullException.ThrowIfNull(device);
        XElement? address = device.Element("address");
        if (address is null || (string?)address.Attribute("type") != "drive")
        {
            return null;
        }

        return new DriveAddress(Number(address, "controller"), Number(address, "bus"), Number(address, "target"), Number(address, "unit"));
    }

    /// <summary>The element libvirt writes for this address.</summary>
    public XElement ToElement() => new(
        "address",
        new XAttribute("type", "drive"),
        new XAttribute("controller", Controller.ToString(CultureInfo.InvariantCulture)),
        new XAttribute("bus", Bus.ToString(CultureInfo.InvariantCulture)),
        new XAttribute("target", Target.ToString(CultureInfo.InvariantCulture)),
        new XAttribute("unit", Unit.ToString(CultureInfo.InvariantCulture)));

    public override string ToString() =>
        string.Create(CultureInfo.InvariantCulture, $"controller={Controller} bus={Bus} target={Target} unit={Unit}");

    private static int Number(XElement address, string name) =>
        int.TryParse((string?)address.Attribute(name), NumberStyles.None, CultureInfo.InvariantCulture, out int value) ? value : 0;
}
