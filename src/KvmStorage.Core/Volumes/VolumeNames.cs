using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;
using KvmStorage.Core.Names;

namespace KvmStorage.Core.Volumes;

/// <summary>Volume names are file names inside a pool folder (<see cref="NameRules"/>): nothing that could point elsewhere.</summary>
public static class VolumeNames
{
    public const int MaxBytes = NameRules.MaxFileNameBytes;

    public static void Validate(string? name)
    {
        string? problem = Check(name);
        if (problem is not null)
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, VolumeErrorIds.InvalidVolumeName, $"'{NameRules.Printable(name)}' is not a valid volume name: {problem}.", name);
        }
    }

    public static string? Check(string? name)
    {
        string? shared = NameRules.Check(name);
        if (shared is not null || name is null)
        {
            return shared;
        }

        if (NameRules.ByteCount(name) > MaxBytes)
        {
            return $"it is longer than {MaxBytes} bytes";
        }

        if (name.Contains('/', StringComparison.Ordinal))
        {
            return "it contains '/' (a volume is a file directly in the pool folder)";
        }

        if (name is "." or "..")
        {
            return "it is '.' or '..'";
        }

        if (name.StartsWith('-'))
        {
            return "it starts with '-'";
        }

        return name.StartsWith(AtomicFile.TempPrefix, StringComparison.Ordinal) ? "the prefix is reserved for the module's temporary files" : null;
    }
}

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
    public const string BackingNotAllowed = Images.ImageErrorIds.BackingFileNotAllowed;
}

/// <summary>How an existing image was allocated, so that growing it keeps to the same mode.</summary>
public static class VolumePreallocation
{
    /// <summary>
    /// A raw image whose blocks cover its whole length was preallocated: grow it with fallocate too. Everything else
    /// (sparse raw, qcow2, other formats) grows sparsely.
    /// </summary>
    public static Images.Preallocation Infer(StorageVolume volume)
    {
        ArgumentNullException.ThrowIfNull(volume);
        return volume.Format == Images.ImageFormat.Raw && volume.FileLength > 0 && volume.Allocation >= volume.FileLength
            ? Images.Preallocation.Falloc
            : Images.Preallocation.Off;
    }
}
