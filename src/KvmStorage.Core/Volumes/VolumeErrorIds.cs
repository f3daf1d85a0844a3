namespace KvmStorage.Core.Volumes;

/// <summary>Stable error identifiers of volumes (PascalCase, scripts match on them).</summary>
public static class VolumeErrorIds
{
    public const string InvalidVolumeName = "InvalidVolumeName";
    public const string VolumeNotFound = "VolumeNotFound";
    public const string VolumeExists = "VolumeAlreadyExists";
    public const string VolumeOutsidePool = "VolumeOutsidePool";
    public const string PoolHasNoFolder = "PoolHasNoVolumeFolder";
    public const string PoolFolderMissing = "PoolFolderMissing";
    public const string VolumeIsBackingFile = "VolumeIsBackingFile";
    public const string VolumeAttached = "VolumeAttachedToVM";
    public const string InvalidSize = "InvalidVolumeSize";
    public const string NotAVolume = "NotAVolume";
    public const string FormatExtensionMismatch = "FormatExtensionMismatch";
    public const string BackingNotAllowed = Images.ImageErrorIds.BackingFileNotAllowed;

    /// <summary>Set-Volume was given nothing to change (no backing file, no format option).</summary>
    public const string NothingToChange = "NothingToChange";
}
