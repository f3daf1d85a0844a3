namespace KvmStorage.Core.Domains;

/// <summary>Stable error identifiers for domain definitions and their disks (PascalCase, scripts match on them).</summary>
public static class DomainErrorIds
{
    public const string VMNotFound = "VMNotFound";
    public const string InvalidVMName = "InvalidVMName";
    public const string DomainFileMalformed = "DomainFileMalformed";
    public const string NotADomainDefinition = "NotADomainDefinition";
    public const string DomainNameMismatch = "DomainNameMismatch";
    public const string DomainFileUnreadable = "DomainFileUnreadable";
    public const string RuntimeStateUnreadable = "DomainRuntimeStateUnreadable";
    public const string DiskNotFound = "DiskNotFound";
    public const string InvalidDiskTarget = "InvalidDiskTarget";
    public const string DuplicateDiskTarget = "DiskTargetAlreadyExists";
    public const string NoFreeDiskTarget = "NoFreeDiskTarget";
    public const string UnsupportedDiskBus = "UnsupportedDiskBus";
    public const string UnsupportedDiskDevice = "UnsupportedDiskDevice";
    public const string InvalidBusForDevice = "InvalidBusForDiskDevice";
    public const string LunNeedsBlockSource = "LunNeedsBlockSource";
    public const string IdeUnitsExhausted = "IdeUnitsExhausted";
    public const string IdeNotSupportedByMachine = "IdeNotSupportedByMachine";
    public const string FloppyUnitsExhausted = "FloppyUnitsExhausted";
    public const string DriveAddressInUse = "DriveAddressInUse";
    public const string UsbDisabled = "UsbDisabledForVM";
    public const string UsbPortsExhausted = "UsbPortsExhausted";
    public const string ShareableNeedsRawFormat = "ShareableNeedsRawFormat";
    public const string NativeIoNeedsDirectCache = "NativeIoNeedsDirectCache";
    public const string BootOrderWithOsBoot = "BootOrderWithOsBoot";
    public const string DuplicateBootOrder = "BootOrderAlreadyUsed";
    public const string InvalidBootOrder = "InvalidBootOrder";
    public const string ReadOnlyMedia = "ReadOnlyMedia";
    public const string ReadOnlyNotSupportedOnBus = "ReadOnlyNotSupportedOnBus";
    public const string NotRemovableMedia = "NotRemovableMedia";
    public const string InvalidDiskOption = "InvalidDiskOption";
    public const string InvalidDiskSerial = "InvalidDiskSerial";
    public const string DiskFormatRequired = "DiskFormatRequired";
    public const string InvalidDiskFormat = "InvalidDiskFormat";
    public const string InvalidDiskSource = "InvalidDiskSource";
    public const string ImageAlreadyAttached = "ImageAlreadyAttached";
    public const string ImageAttachedElsewhere = "ImageAttachedToAnotherVM";
}
