using System.Globalization;
using System.Xml.Linq;
using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Domains;

/// <summary>Where a new disk goes: its target name, and a drive address only when libvirt could not derive a free one from the name.</summary>
public sealed record DiskPlacement(string Target, DriveAddress? Address);

/// <summary>
/// Chooses and checks targets of new disks the way libvirt 9.0 will read them. A disk on a controller-based bus
/// (scsi, sata, ide, fdc) written without an address gets one derived from its target name
/// (<see cref="DriveAddress.Derive"/>), and libvirt refuses the whole definition when two disks of a bus end up at
/// the same address ("Found duplicate drive address for disk with target name …"). So a free target name is not
/// enough: its derived address must be free of the addresses the other disks hold, written or derived, and of SCSI
/// host devices' addresses, and must lie within what the bus supports.
/// </summary>
public static class DiskTargetPlanner
{
    // The slots of the one IDE controller (2 buses x 2 units) and the one floppy controller (2 units) qemu supports;
    // libvirt refuses a second one ("Only 1 IDE controller is supported", "Only 1 fdc controller is supported").
    private static readonly DriveAddress[] IdeSlots = [new(0, 0, 0, 0), new(0, 0, 0, 1), new(0, 1, 0, 0), new(0, 1, 0, 1)];
    private static readonly DriveAddress[] FloppySlots = [new(0, 0, 0, 0), new(0, 0, 0, 1)];

    /// <summary>
    /// The target for a new disk on <paramref name="bus"/>: the lowest name of the bus's prefix that no disk of any
    /// definition uses and whose derived address is free in all of them (a running VM's and its persistent
    /// definition, say). When no such name fits on the bus's controllers (IDE and floppy, which have one controller
    /// each) but a slot is free, the lowest free name with that slot written explicitly, which libvirt accepts.
    /// </summary>
    public static DiskPlacement Choose(string bus, params DomainDefinition?[] definitions)
    {
        ArgumentNullException.ThrowIfNull(definitions);
        string prefix = DiskTargetNames.PrefixForBus(bus);
        var usage = new DriveUsage(definitions);
        if (!DriveAddress.BusHasDriveAddress(bus))
        {
            return new DiskPlacement(AnyFreeName(prefix, usage), null);
        }

        string? target = FirstFreeName(prefix, usage, index =>
        {
            DriveAddress address = DriveAddress.Derive(bus, index)!.Value;
            return usage.WithinLimits(bus, address) && usage.Holder(bus, address) is null;
        }, stopWhen: index => bus is "ide" or "fdc" && DriveAddress.Derive(bus, index)!.Value.Controller > 0);
        if (target is not null)
        {
            return new DiskPlacement(target, null);
        }

        DriveAddress[] slots = bus == "ide" ? IdeSlots : FloppySlots;
        foreach (DriveAddress slot in slots)
        {
            if (usage.Holder(bus, slot) is null)
            {
                return new DiskPlacement(AnyFreeName(prefix, usage), slot);
            }
        }

        string vm = definitions.FirstOrDefault(d => d is not null)?.Name ?? string.Empty;
        throw bus == "ide"
            ? new KvmStorageException(ErrorKind.NotSupported, DomainErrorIds.IdeUnitsExhausted, $"All four IDE units of '{vm}' are taken: libvirt supports one IDE controller with 2 buses of 2 units. Use sata, scsi or virtio.", vm)
            : new KvmStorageException(ErrorKind.NotSupported, DomainErrorIds.FloppyUnitsExhausted, $"Both floppy units of '{vm}' are taken: libvirt supports one floppy controller with 2 units.", vm);
    }

    /// <summary>
    /// Refuses a requested target (with its explicit address, if any) whose drive address another disk of the bus,
    /// or a SCSI host device, already holds in <paramref name="domain"/>: libvirt would refuse the definition.
    /// </summary>
    public static void CheckRequested(DomainDefinition domain, string target, string bus, DriveAddress? address)
    {
        ArgumentNullException.ThrowIfNull(domain);
        DriveAddress? wanted = address ?? AddressOf(bus, target);
        if (wanted is not DriveAddress at)
        {
            return;
        }

        var usage = new DriveUsage([domain]);
        if (usage.Holder(bus, at) is string holder)
        {
            string how = address is null ? $"libvirt places '{target}' on the {bus} bus at {at}" : $"the {bus} address {at} requested for '{target}'";
            string free = TrySuggest(bus, domain);
            throw new KvmStorageException(
                ErrorKind.AlreadyExists,
                DomainErrorIds.DriveAddressInUse,
                $"{Capitalize(how)}, which {holder} of '{domain.Name}' already holds; libvirt would refuse the definition (duplicate drive address).{free}",
                target);
        }
    }

    /// <summary>
    /// Refuses a new USB disk when the domain's USB controllers and hubs have no free port: libvirt then fails to load
    /// the definition ("No free USB ports"). Ports per controller model as virDomainUSBAddressControllerModelToPorts
    /// counts them (ICH9 UHCI companions count none: their EHCI master holds the ports), 8 per USB hub. Not checked
    /// when a USB controller has no model written (libvirt picks one by machine type) or there is none.
    /// </summary>
    public static void CheckUsbPortFree(DomainDefinition domain, string target)
    {
        ArgumentNullException.ThrowIfNull(domain);
        List<XElement> devices = domain.Devices?.Elements().ToList() ?? [];
        List<XElement> controllers = devices.Where(d => d.Name == "controller" && (string?)d.Attribute("type") == "usb").ToList();
        if (controllers.Count == 0 || controllers.Any(c => c.Attribute("model") is null))
        {
            // libvirt picks the model (and so the port count) by machine type; leave it to libvirt.
            return;
        }

        int ports = controllers.Sum(UsbPorts) + (8 * devices.Count(d => d.Name == "hub" && (string?)d.Attribute("type") == "usb"));
        int used = devices.Count(UsesUsbPort);
        if (used >= ports)
        {
            throw new KvmStorageException(
                ErrorKind.NotSupported,
                DomainErrorIds.UsbPortsExhausted,
                $"All {ports} USB ports of '{domain.Name}' are taken, so libvirt would refuse the definition with '{target}' on the usb bus (No free USB ports). Add a USB hub or a controller with more ports, or use another bus.",
                target);
        }
    }

    private static int UsbPorts(XElement controller)
    {
        int? declared = int.TryParse((string?)controller.Attribute("ports"), NumberStyles.None, CultureInfo.InvariantCulture, out int p) ? p : null;
        return (string?)controller.Attribute("model") switch
        {
            "piix3-uhci" or "piix4-uhci" or "vt82c686b-uhci" => 2,
            "ehci" or "ich9-ehci1" => 6,
            "ich9-uhci1" or "ich9-uhci2" or "ich9-uhci3" => 0,
            "pci-ohci" => 3,
            "nec-xhci" or "qemu-xhci" => declared ?? 4,
            "qusb1" or "qusb2" => declared ?? 8,
            _ => 0,
        };
    }

    /// <summary>A device that holds a USB port: one with a USB address, or one on the USB bus that libvirt will give one.</summary>
    private static bool UsesUsbPort(XElement device)
    {
        XElement? address = device.Element("address");
        if (address is not null)
        {
            return (string?)address.Attribute("type") == "usb";
        }

        return device.Name.LocalName switch
        {
            "disk" => (string?)device.Element("target")?.Attribute("bus") == "usb",
            "input" => (string?)device.Attribute("bus") == "usb",
            "hostdev" => (string?)device.Attribute("type") == "usb",
            "redirdev" => ((string?)device.Attribute("bus") ?? "usb") == "usb",
            "hub" => (string?)device.Attribute("type") == "usb",
            _ => false,
        };
    }

    /// <summary>The address a disk occupies: its written drive address, else the one libvirt derives from its target and bus.</summary>
    public static DriveAddress? AddressOf(XElement disk, string bus) =>
        DriveAddress.Read(disk) ?? AddressOf(bus, DomainDefinition.TargetOf(disk));

    /// <summary>The bus libvirt assumes for a disk without <c>bus=</c> (virDomainDiskDefPostParse): floppy → fdc, else by prefix.</summary>
    public static string InferBus(string? target, string device)
    {
        if (device == "floppy")
        {
            return "fdc";
        }

        string prefix = DiskTargetNames.TryParse(target, out string parsed, out _) ? parsed : string.Empty;
        return prefix switch
        {
            "hd" => "ide",
            "sd" => "scsi",
            "vd" => "virtio",
            "xvd" => "xen",
            "ubd" => "uml",
            "fd" => "fdc",
            _ => string.Empty,
        };
    }

    /// <summary>The bus of a disk element: <c>target bus=</c>, else libvirt's inference.</summary>
    public static string BusOf(XElement disk) =>
        (string?)disk.Element("target")?.Attribute("bus") ?? InferBus(DomainDefinition.TargetOf(disk), (string?)disk.Attribute("device") ?? "disk");

    private static DriveAddress? AddressOf(string bus, string? target) =>
        DriveAddress.BusHasDriveAddress(bus) && DiskTargetNames.TryParse(target, out _, out int index) ? DriveAddress.Derive(bus, index) : null;

    private static string? FirstFreeName(string prefix, DriveUsage usage, Func<int, bool> fits, Func<int, bool>? stopWhen = null)
    {
        for (int index = 0; index < int.MaxValue; index++)
        {
            if (stopWhen is not null && stopWhen(index))
            {
                return null;
            }

            string name = DiskTargetNames.Format(prefix, index);
            if (!usage.Names.Contains(name) && fits(index))
            {
                return name;
            }
        }

        return null;
    }

    private static string AnyFreeName(string prefix, DriveUsage usage) =>
        FirstFreeName(prefix, usage, _ => true)
        ?? throw new KvmStorageException(ErrorKind.NotSupported, DomainErrorIds.NoFreeDiskTarget, $"No {prefix}* target name is free.", prefix);

    private static string TrySuggest(string bus, DomainDefinition domain)
    {
        try
        {
            DiskPlacement next = Choose(bus, domain);
            return next.Address is null ? $" Omit the target to get the next free one ({next.Target})." : string.Empty;
        }
        catch (KvmStorageException)
        {
            return string.Empty;
        }
    }

    private static string Capitalize(string text) => text.Length == 0 ? text : char.ToUpperInvariant(text[0]) + text[1..];

    /// <summary>Names and drive addresses in use across one or more definitions of a domain.</summary>
    private sealed class DriveUsage
    {
        private readonly Dictionary<(string Bus, DriveAddress Address), string> holders = [];
        private readonly Dictionary<int, string?> scsiControllerModels = [];

        public DriveUsage(IEnumerable<DomainDefinition?> definitions)
        {
            foreach (DomainDefinition domain in definitions.OfType<DomainDefinition>())
            {
                foreach (XElement disk in domain.DiskElements)
                {
                    string? target = DomainDefinition.TargetOf(disk);
                    if (target is not null)
                    {
                        Names.Add(target);
                    }

                    string bus = BusOf(disk);
                    if (AddressOf(disk, bus) is DriveAddress address)
                    {
                        holders.TryAdd((bus, address), $"disk '{target}'");
                    }
                }

                // libvirt checks SCSI disks against SCSI host devices' addresses too (virDomainHostdevDefPostParse).
                foreach (XElement hostdev in domain.Devices?.Elements("hostdev") ?? [])
                {
                    if ((string?)hostdev.Attribute("type") == "scsi" && DriveAddress.Read(hostdev) is DriveAddress address)
                    {
                        holders.TryAdd(("scsi", address), "a SCSI host device");
                    }
                }

                foreach (XElement controller in domain.Devices?.Elements("controller") ?? [])
                {
                    if ((string?)controller.Attribute("type") == "scsi")
                    {
                        int index = int.TryParse((string?)controller.Attribute("index"), NumberStyles.None, CultureInfo.InvariantCulture, out int i) ? i : 0;
                        scsiControllerModels.TryAdd(index, (string?)controller.Attribute("model"));
                    }
                }
            }
        }

        public HashSet<string> Names { get; } = new(StringComparer.Ordinal);

        public string? Holder(string bus, DriveAddress address) => holders.TryGetValue((bus, address), out string? holder) ? holder : null;

        /// <summary>
        /// Whether the bus can hold the address: one IDE and one floppy controller; on an existing SCSI controller, a
        /// unit its model has (the limits of virDomainSCSIDriveAddressIsUsed). SATA and SCSI controllers that do not
        /// exist yet are added (libvirt adds the missing ones itself).
        /// </summary>
        public bool WithinLimits(string bus, DriveAddress address) => bus switch
        {
            "ide" or "fdc" => address.Controller == 0,
            "scsi" => !scsiControllerModels.TryGetValue(address.Controller, out string? model) || ScsiUnitUsable(model, address.Unit),
            _ => true,
        };

        private static bool ScsiUnitUsable(string? model, int unit) => model switch
        {
            "virtio-scsi" or "virtio-transitional" or "virtio-non-transitional" => unit <= 16383,
            "ibmvscsi" => unit <= 31 && unit != 7,
            "lsisas1068" => unit <= 1,
            "lsisas1078" => unit <= 255,
            "lsilogic" or "vmpvscsi" or "buslogic" => unit != 7,
            "ncr53c90" or "dc390" or "am53c974" => unit <= 6,
            _ => true,
        };
    }
}
