using System.Globalization;
using System.Xml.Linq;
using KvmStorage.Core.Errors;

namespace KvmStorage.Core.Domains;

/// <summary>
/// Adds, changes and removes disks of one <see cref="DomainDefinition"/>, refusing what libvirt 9.0's qemu driver
/// would refuse at define or attach time (each refusal observed against libvirtd 9.0; the messages quoted in the errors
/// are libvirt's own). Each change is built on a copy of the disk and
/// checked before it replaces anything, so a refused change leaves the definition exactly as it was.
/// </summary>
public sealed class DomainDiskEditor
{
    private static readonly HashSet<string> DeviceKinds = ["disk", "cdrom", "floppy", "lun"];
    private static readonly HashSet<string> AttachableBuses = ["virtio", "scsi", "sata", "usb", "ide", "fdc"];
    private static readonly HashSet<string> CacheModes = ["default", "none", "writethrough", "writeback", "directsync", "unsafe"];
    private static readonly HashSet<string> IoModes = ["threads", "native", "io_uring"];
    private static readonly HashSet<string> DiscardModes = ["unmap", "ignore"];

    // Formats qemu opens that libvirt 9.0 accepts in <driver type>; it refuses "vhdx" and "parallels" (observed:
    // "unknown driver format value"), and "iso"/"dir" are storage-pool names, not qemu drivers.
    private static readonly HashSet<string> Formats = ["raw", "qcow2", "qcow", "qed", "vmdk", "vdi", "vpc", "luks", "bochs", "cloop", "dmg"];

    // libvirt's virDomainDiskDefFormat writes a disk's children in this order (observed on 9.0: target, readonly,
    // shareable, serial, boot, address). New children are slotted in by it; unknown children keep their place.
    private static readonly string[] DiskChildOrder =
    [
        "driver", "auth", "source", "backingStore", "backenddomain", "geometry", "blockio", "mirror", "target", "iotune",
        "readonly", "shareable", "transient", "serial", "wwn", "vendor", "product", "encryption", "boot", "alias", "address",
    ];

    // virDomainDiskDefFormatDriver's attribute order.
    private static readonly string[] DriverAttributeOrder =
    [
        "name", "type", "cache", "error_policy", "rerror_policy", "io", "ioeventfd", "event_idx", "copy_on_read", "discard",
        "iothread", "detect_zeroes", "queues", "queue_size",
    ];

    private readonly DomainDefinition domain;

    public DomainDiskEditor(DomainDefinition domain)
    {
        ArgumentNullException.ThrowIfNull(domain);
        this.domain = domain;
    }

    /// <summary>
    /// Adds a disk where libvirt keeps it (see <see cref="InsertDisk"/>), with a virtio-scsi controller for each SCSI
    /// controller index its address needs that the domain lacks, and returns it as read back from the definition.
    /// Without a target, the disk gets the lowest free name whose derived drive address is free
    /// (<see cref="DiskTargetPlanner.Choose"/>); a requested target whose address another disk holds is refused.
    /// </summary>
    public DomainDisk AddDisk(DiskSpec spec)
    {
        ArgumentNullException.ThrowIfNull(spec);
        string device = spec.Device;
        if (!DeviceKinds.Contains(device))
        {
            throw Invalid(DomainErrorIds.UnsupportedDiskDevice, $"The disk device '{device}' is not supported; use disk, cdrom, floppy or lun.", device);
        }

        string bus = spec.BusOrDefault;
        if (!AttachableBuses.Contains(bus))
        {
            throw Invalid(DomainErrorIds.UnsupportedDiskBus, $"The disk bus '{bus}' is not supported for qemu domains; use virtio, scsi, sata, usb, ide or fdc.", bus);
        }

        bool removable = device is "cdrom" or "floppy";
        string? format = spec.Format ?? (removable ? "raw" : null);
        if (string.IsNullOrEmpty(format))
        {
            // libvirt probes no image formats (formatdomain: <driver type>), so it would store a missing type as raw and
            // expose a qcow2 image's container, not its contents, to the guest.
            throw Invalid(DomainErrorIds.DiskFormatRequired, "The disk format (for example qcow2 or raw) is required: libvirt treats a disk without one as raw.", spec.SourcePath);
        }

        DiskPlacement placement = spec.Target is null
            ? DiskTargetPlanner.Choose(bus, domain)
            : new DiskPlacement(spec.Target, spec.Address);
        string target = placement.Target;

        DiskSettings settings = spec.Settings;
        var disk = new XElement("disk");
        var driver = new XElement("driver", new XAttribute("name", "qemu"), new XAttribute("type", format));
        AddIfSet(driver, "cache", settings.Cache);
        AddIfSet(driver, "io", settings.Io);
        AddIfSet(driver, "discard", settings.Discard);
        disk.Add(driver);

        string type;
        if (spec.AsVolumeSource)
        {
            if (string.IsNullOrEmpty(spec.Pool) || string.IsNullOrEmpty(spec.Volume))
            {
                throw Invalid(DomainErrorIds.InvalidDiskSource, "A volume source needs both the pool and the volume name.", spec.Volume);
            }

            type = "volume";
            disk.Add(new XElement("source", new XAttribute("pool", spec.Pool), new XAttribute("volume", spec.Volume), Encryption(spec)));
        }
        else if (spec.SourcePath is not null)
        {
            RequireAbsolute(spec.SourcePath);
            type = spec.SourceIsBlockDevice ? "block" : "file";
            disk.Add(new XElement("source", new XAttribute(spec.SourceIsBlockDevice ? "dev" : "file", spec.SourcePath), Encryption(spec)));
        }
        else if (removable)
        {
            type = "file";
        }
        else
        {
            throw Invalid(DomainErrorIds.InvalidDiskSource, $"A {device} needs a source path or a pool volume; only cdrom and floppy drives may be empty.", target);
        }

        disk.Add(new XAttribute("type", type), new XAttribute("device", device));
        disk.Add(new XElement("target", new XAttribute("dev", target), new XAttribute("bus", bus)));

        // libvirt makes every cdrom read-only on its own; an explicit request for a writable one is refused instead.
        bool readOnly = settings.ReadOnly ?? device == "cdrom";
        if (readOnly)
        {
            disk.Add(new XElement("readonly"));
        }

        if (settings.Shareable == true)
        {
            disk.Add(new XElement("shareable"));
        }

        if (settings.Serial is not null)
        {
            disk.Add(new XElement("serial", settings.Serial));
        }

        if (settings.BootOrder is int order)
        {
            disk.Add(new XElement("boot", new XAttribute("order", order.ToString(CultureInfo.InvariantCulture))));
        }

        if (placement.Address is DriveAddress address)
        {
            disk.Add(address.ToElement());
        }

        Validate(disk, replacing: null);
        if (DiskTargetNames.IsValid(target))
        {
            DiskTargetPlanner.CheckRequested(domain, target, bus, placement.Address);
        }

        if (bus == "usb")
        {
            DiskTargetPlanner.CheckUsbPortFree(domain, target);
        }

        XElement devices = EnsureDevices();
        InsertDisk(devices, disk, bus, target);

        if (bus == "scsi" && DiskTargetPlanner.AddressOf(disk, bus) is DriveAddress scsiAddress)
        {
            AddMissingScsiControllers(devices, scsiAddress.Controller);
        }

        return domain.ReadDisk(disk);
    }

    /// <summary>Changes settings of one disk; see <see cref="DiskUpdate"/> for how to remove a setting.</summary>
    public DomainDisk UpdateDisk(string target, DiskUpdate update)
    {
        ArgumentNullException.ThrowIfNull(update);
        XElement original = RequireDisk(target);
        var disk = new XElement(original);
        if (update.Format is not null)
        {
            if (update.Format.Length == 0)
            {
                throw Invalid(DomainErrorIds.DiskFormatRequired, "The disk format cannot be removed: libvirt treats a disk without one as raw.", target);
            }

            SetDriverAttribute(disk, "type", update.Format);
        }

        DiskSettings settings = update.Settings;
        SetDriverAttribute(disk, "cache", settings.Cache);
        SetDriverAttribute(disk, "io", settings.Io);
        SetDriverAttribute(disk, "discard", settings.Discard);
        if (settings.ReadOnly is bool readOnly)
        {
            SetFlag(disk, "readonly", readOnly);
        }

        if (settings.Shareable is bool shareable)
        {
            SetFlag(disk, "shareable", shareable);
        }

        if (settings.Serial is not null)
        {
            disk.Element("serial")?.Remove();
            if (settings.Serial.Length > 0)
            {
                InsertChild(disk, new XElement("serial", settings.Serial));
            }
        }

        if (settings.BootOrder is int order)
        {
            disk.Element("boot")?.Remove();
            if (order != 0)
            {
                InsertChild(disk, new XElement("boot", new XAttribute("order", order.ToString(CultureInfo.InvariantCulture))));
            }
        }

        Validate(disk, original);
        original.ReplaceWith(disk);
        return domain.ReadDisk(disk);
    }

    /// <summary>Removes a disk and returns what it was. Controllers stay, as libvirt leaves them on detach.</summary>
    public DomainDisk RemoveDisk(string target)
    {
        XElement disk = RequireDisk(target);
        DomainDisk removed = domain.ReadDisk(disk);
        disk.Remove();
        return removed;
    }

    /// <summary>
    /// Inserts a medium into a cdrom or floppy drive (<paramref name="sourcePath"/>), or ejects it (null).
    /// The format stays as it was (raw when there was none) unless <paramref name="format"/> is given.
    /// </summary>
    /// <summary>
    /// Points a disk at another image file (a moved disk, an overlay after an external snapshot, a base after a merge):
    /// the source file and driver type change, a backing chain libvirt recorded is dropped (it describes the old
    /// image), and what the old source held besides its path (a LUKS <c>&lt;encryption&gt;</c>, a seclabel) is kept.
    /// </summary>
    public DomainDisk ReplaceSource(string target, string sourcePath, string format)
    {
        RequireAbsolute(sourcePath);
        XElement original = RequireDisk(target);
        var disk = new XElement(original);
        XElement? old = disk.Element("source");
        var source = new XElement("source", new XAttribute("file", sourcePath), old?.Elements());
        old?.Remove();
        disk.Element("backingStore")?.Remove();
        disk.SetAttributeValue("type", "file");
        InsertChild(disk, source);
        SetDriverAttribute(disk, "type", format);
        Validate(disk, original);
        original.ReplaceWith(disk);
        return domain.ReadDisk(disk);
    }

    public DomainDisk ChangeMedia(string target, string? sourcePath, string? format = null)
    {
        XElement original = RequireDisk(target);
        string device = (string?)original.Attribute("device") ?? "disk";
        if (device is not ("cdrom" or "floppy"))
        {
            throw new KvmStorageException(
                ErrorKind.InvalidOperation,
                DomainErrorIds.NotRemovableMedia,
                $"The disk '{target}' of '{domain.Name}' is a {device}, not a cdrom or floppy drive: its medium cannot be changed.",
                target);
        }

        var disk = new XElement(original);
        disk.Element("source")?.Remove();
        disk.Element("backingStore")?.Remove();
        if (sourcePath is not null)
        {
            RequireAbsolute(sourcePath);
            disk.SetAttributeValue("type", "file");
            InsertChild(disk, new XElement("source", new XAttribute("file", sourcePath)));
        }
        else if ((string?)disk.Attribute("type") is not ("file" or "block"))
        {
            // An empty volume or network drive has nothing to name its pool or host: make it an empty file drive.
            disk.SetAttributeValue("type", "file");
        }

        if (format is not null || disk.Element("driver")?.Attribute("type") is null)
        {
            if (disk.Element("driver") is null)
            {
                InsertChild(disk, new XElement("driver", new XAttribute("name", "qemu")));
            }

            SetDriverAttribute(disk, "type", format ?? "raw");
        }

        Validate(disk, original);
        original.ReplaceWith(disk);
        return domain.ReadDisk(disk);
    }

    private static KvmStorageException Invalid(string id, string message, object? target) =>
        new(ErrorKind.InvalidArgument, id, message, target);

    private static KvmStorageException Unsupported(string id, string message, object? target) =>
        new(ErrorKind.NotSupported, id, message, target);

    private static void AddIfSet(XElement element, string name, string? value)
    {
        if (!string.IsNullOrEmpty(value))
        {
            element.Add(new XAttribute(name, value));
        }
    }

    private static void RequireAbsolute(string path)
    {
        if (!path.StartsWith('/'))
        {
            throw Invalid(DomainErrorIds.InvalidDiskSource, $"The disk source '{path}' must be an absolute host path.", path);
        }
    }

    private static void SetFlag(XElement disk, string name, bool on)
    {
        XElement? existing = disk.Element(name);
        if (on && existing is null)
        {
            InsertChild(disk, new XElement(name));
        }
        else if (!on)
        {
            existing?.Remove();
        }
    }

    /// <summary>Null leaves the attribute, empty removes it, otherwise it is set in libvirt's attribute order.</summary>
    private static void SetDriverAttribute(XElement disk, string name, string? value)
    {
        if (value is null)
        {
            return;
        }

        XElement? driver = disk.Element("driver");
        if (driver is null)
        {
            if (value.Length == 0)
            {
                return;
            }

            driver = new XElement("driver", new XAttribute("name", "qemu"));
            InsertChild(disk, driver);
        }

        SetAttributeInOrder(driver, name, value, DriverAttributeOrder);
    }

    internal static void SetAttributeInOrder(XElement element, string name, string value, string[] order)
    {
        XAttribute? existing = element.Attribute(name);
        if (value.Length == 0)
        {
            existing?.Remove();
            return;
        }

        if (existing is not null)
        {
            existing.Value = value;
            return;
        }

        int rank = Array.IndexOf(order, name);
        var attributes = element.Attributes().ToList();
        int at = attributes.FindIndex(a => Array.IndexOf(order, a.Name.LocalName) > rank);
        if (rank < 0 || at < 0)
        {
            element.Add(new XAttribute(name, value));
            return;
        }

        attributes.Insert(at, new XAttribute(name, value));
        element.ReplaceAttributes(attributes.Select(a => new XAttribute(a)));
    }

    /// <summary>Puts a child where libvirt would write it: before the first known child that libvirt writes later.</summary>
    private static void InsertChild(XElement disk, XElement child)
    {
        int rank = Array.IndexOf(DiskChildOrder, child.Name.LocalName);
        XElement? before = disk.Elements().FirstOrDefault(e => Array.IndexOf(DiskChildOrder, e.Name.LocalName) > rank);
        if (before is null)
        {
            disk.Add(child);
        }
        else
        {
            before.AddBeforeSelf(child);
        }
    }

    private static string InferBus(string target, string device) => DiskTargetPlanner.InferBus(target, device);

    private static bool IsSerialCharacter(char c) =>
        c is (>= 'a' and <= 'z') or (>= 'A' and <= 'Z') or (>= '0' and <= '9') or ' ' or '_' or '-' or '.' or '+';

    private XElement EnsureDevices()
    {
        XElement? devices = domain.Devices;
        if (devices is null)
        {
            devices = new XElement("devices");
            domain.Element.Add(devices);
        }

        return devices;
    }

    private XElement RequireDisk(string target) =>
        domain.FindDiskElement(target) ?? throw new KvmStorageException(
            ErrorKind.NotFound,
            DomainErrorIds.DiskNotFound,
            $"The domain '{domain.Name}' has no disk with target '{target}'.",
            target);

    /// <summary>
    /// Places a new disk where libvirt keeps it (observed on 9.0, whose files come back in this order after any API
    /// change): before the first disk on the same bus with a higher target index, else right after the last disk on
    /// the same bus, else after all disks. Disks come first in <c>&lt;devices&gt;</c>, after <c>&lt;emulator&gt;</c>.
    /// </summary>
    private static void InsertDisk(XElement devices, XElement disk, string bus, string target)
    {
        int index = DiskTargetNames.TryParse(target, out _, out int parsed) ? parsed : -1;
        var disks = devices.Elements("disk").ToList();
        XElement? before = null;
        XElement? after = null;
        for (int i = disks.Count - 1; i >= 0; i--)
        {
            XElement existing = disks[i];
            string existingTarget = DomainDefinition.TargetOf(existing) ?? string.Empty;
            string existingBus = (string?)existing.Element("target")?.Attribute("bus") ?? InferBus(existingTarget, (string?)existing.Attribute("device") ?? "disk");
            if (existingBus != bus)
            {
                continue;
            }

            if (DiskTargetNames.TryParse(existingTarget, out _, out int existingIndex) && existingIndex > index)
            {
                before = existing;
                after = null;
            }
            else if (before is null && after is null)
            {
                after = existing;
            }
        }

        if (before is not null)
        {
            before.AddBeforeSelf(disk);
        }
        else if ((after ?? disks.LastOrDefault()) is XElement previous)
        {
            previous.AddAfterSelf(disk);
        }
        else if (devices.Element("emulator") is XElement emulator)
        {
            emulator.AddAfterSelf(disk);
        }
        else
        {
            devices.AddFirst(disk);
        }
    }

    // virt-manager adds a virtio-scsi controller for the first SCSI disk; libvirt alone would add an lsilogic one for
    // every missing index up to the highest one a SCSI disk's address names (virDomainDefAddDiskControllersForType).
    private static void AddMissingScsiControllers(XElement devices, int upToIndex)
    {
        var present = devices.Elements("controller")
            .Where(c => (string?)c.Attribute("type") == "scsi")
            .Select(c => int.TryParse((string?)c.Attribute("index"), NumberStyles.None, CultureInfo.InvariantCulture, out int i) ? i : 0)
            .ToHashSet();
        for (int index = 0; index <= upToIndex; index++)
        {
            if (present.Contains(index))
            {
                continue;
            }

            var controller = new XElement("controller", new XAttribute("type", "scsi"), new XAttribute("index", index.ToString(CultureInfo.InvariantCulture)), new XAttribute("model", "virtio-scsi"));
            XElement? after = devices.Elements("controller").LastOrDefault() ?? devices.Elements("disk").LastOrDefault();
            if (after is null)
            {
                devices.AddFirst(controller);
            }
            else
            {
                after.AddAfterSelf(controller);
            }
        }
    }

    /// <summary>The checks libvirt 9.0's qemu driver makes on a disk at define/attach, applied to a candidate element.</summary>
    private void Validate(XElement disk, XElement? replacing)
    {
        DomainDisk d = domain.ReadDisk(disk);
        string target = d.Target;
        DiskTargetNames.Validate(target);
        if (!DeviceKinds.Contains(d.Device))
        {
            throw Invalid(DomainErrorIds.UnsupportedDiskDevice, $"The disk device '{d.Device}' is not supported; use disk, cdrom, floppy or lun.", d.Device);
        }

        if (domain.DiskElements.Any(e => e != replacing && DomainDefinition.TargetOf(e) == target))
        {
            throw new KvmStorageException(ErrorKind.AlreadyExists, DomainErrorIds.DuplicateDiskTarget, $"The domain '{domain.Name}' already has a disk with target '{target}'.", target);
        }

        string bus = d.Bus ?? InferBus(target, d.Device);
        if (d.Device == "cdrom" && bus == "virtio")
        {
            throw Invalid(DomainErrorIds.InvalidBusForDevice, $"A cdrom cannot be on the virtio bus (libvirt: disk type of '{target}' does not support ejectable media); use sata, scsi or ide.", target);
        }

        if (d.Device == "floppy" && bus != "fdc")
        {
            throw Invalid(DomainErrorIds.InvalidBusForDevice, $"A floppy drive must be on the fdc bus, not '{bus}'.", target);
        }

        if (bus == "fdc" && d.Device != "floppy")
        {
            throw Invalid(DomainErrorIds.InvalidBusForDevice, $"The fdc bus takes only floppy drives, not a {d.Device}.", target);
        }

        if (d.Device == "lun")
        {
            if (bus != "scsi")
            {
                throw Invalid(DomainErrorIds.InvalidBusForDevice, $"A lun must be on the scsi bus, not '{bus}'.", target);
            }

            if (d.Type is not ("block" or "network"))
            {
                throw Invalid(DomainErrorIds.LunNeedsBlockSource, $"A lun needs a block device source (libvirt: disk device='lun' is only valid for block type disk source).", target);
            }
        }

        if (bus == "ide")
        {
            string? machine = domain.MachineType;
            if (machine is not null && (machine == "q35" || machine.StartsWith("pc-q35", StringComparison.Ordinal)))
            {
                throw Unsupported(DomainErrorIds.IdeNotSupportedByMachine, $"The machine type '{machine}' has no IDE controller; use sata.", target);
            }

            // i440fx has one IDE controller with 2 buses x 2 units. Without a written address the unit comes from the
            // name's index, whatever its prefix, so hde and beyond would need a second controller.
            if (DiskTargetPlanner.AddressOf(disk, bus) is { Controller: > 0 })
            {
                throw Unsupported(DomainErrorIds.IdeUnitsExhausted, $"The IDE target '{target}' is beyond hdd: libvirt supports one IDE controller with 4 units (hda to hdd).", target);
            }
        }

        if (bus == "fdc" && DiskTargetPlanner.AddressOf(disk, bus) is { Controller: > 0 })
        {
            throw Unsupported(DomainErrorIds.FloppyUnitsExhausted, $"The floppy target '{target}' is beyond fdb: libvirt supports one floppy controller with 2 units (fda and fdb).", target);
        }

        if (bus == "usb" && (domain.Devices?.Elements("controller").Any(c => (string?)c.Attribute("type") == "usb" && (string?)c.Attribute("model") == "none") ?? false))
        {
            throw Unsupported(DomainErrorIds.UsbDisabled, $"'{domain.Name}' has USB disabled (a usb controller of model 'none'); libvirt refuses USB disks in it. Use another bus.", target);
        }

        if (d.Device == "cdrom" && !d.ReadOnly)
        {
            throw Invalid(DomainErrorIds.ReadOnlyMedia, $"The cdrom '{target}' is read-only media and cannot be made writable.", target);
        }

        if (d.ReadOnly && d.Device == "disk" && bus is "ide" or "sata")
        {
            throw Unsupported(DomainErrorIds.ReadOnlyNotSupportedOnBus, $"libvirt does not support read-only {bus} disks ('{target}'); use virtio or scsi.", target);
        }

        if (d.Format is not null && !Formats.Contains(d.Format))
        {
            throw Invalid(DomainErrorIds.InvalidDiskFormat, $"The disk format '{d.Format}' is not one qemu opens; use raw, qcow2, qed, vmdk, vdi, vpc or luks.", d.Format);
        }

        CheckOption(d.Cache, CacheModes, "cache", target);
        CheckOption(d.Io, IoModes, "io", target);
        CheckOption(d.Discard, DiscardModes, "discard", target);

        if (d.Shareable && !d.ReadOnly && (d.Format ?? "raw") != "raw")
        {
            throw Unsupported(
                DomainErrorIds.ShareableNeedsRawFormat,
                $"A shareable read-write disk must be raw, not {d.Format} (libvirt: shared access for disk '{target}' requires use of supported storage format); make it read-only or use raw.",
                target);
        }

        if (d.Io == "native" && d.Cache is not ("none" or "directsync"))
        {
            throw Unsupported(DomainErrorIds.NativeIoNeedsDirectCache, $"io='native' needs cache 'none' or 'directsync' (disk '{target}' has {d.Cache ?? "no cache mode"}).", target);
        }

        if (d.Serial is not null && (d.Serial.Length == 0 || !d.Serial.All(IsSerialCharacter)))
        {
            throw Invalid(DomainErrorIds.InvalidDiskSerial, $"The disk serial '{d.Serial}' may hold only letters, digits, space, '_', '-', '.' and '+'.", d.Serial);
        }

        if (disk.Element("boot") is XElement boot)
        {
            if (domain.HasOsBootDevices)
            {
                throw Unsupported(DomainErrorIds.BootOrderWithOsBoot, $"The domain '{domain.Name}' boots by <os><boot dev>; per-device boot order cannot be used with it.", target);
            }

            if (d.BootOrder is not int order || order < 1)
            {
                throw Invalid(DomainErrorIds.InvalidBootOrder, $"The boot order '{(string?)boot.Attribute("order")}' must be a positive whole number.", target);
            }

            bool used = (domain.Devices?.Descendants("boot") ?? [])
                .Where(b => replacing is null || !b.Ancestors().Contains(replacing))
                .Any(b => (string?)b.Attribute("order") == order.ToString(CultureInfo.InvariantCulture));
            if (used)
            {
                throw Invalid(DomainErrorIds.DuplicateBootOrder, $"Boot order {order} is already used by another device of '{domain.Name}'.", target);
            }
        }
    }

    private static void CheckOption(string? value, HashSet<string> allowed, string name, string target)
    {
        if (value is not null && !allowed.Contains(value))
        {
            throw Invalid(DomainErrorIds.InvalidDiskOption, $"'{value}' is not a valid {name} mode for disk '{target}'; use one of: {string.Join(", ", allowed)}.", value);
        }
    }

    /// <summary>formatdomain "Disks": the LUKS secret inside the source, or nothing for an image that is not encrypted.</summary>
    private static XElement? Encryption(DiskSpec spec) =>
        spec.LuksSecret is { } uuid
            ? new XElement("encryption", new XAttribute("format", "luks"), new XElement("secret", new XAttribute("type", "passphrase"), new XAttribute("uuid", uuid.ToString("D"))))
            : null;
}
