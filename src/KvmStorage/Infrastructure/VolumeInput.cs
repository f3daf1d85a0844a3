using System.Management.Automation;
using KvmStorage.Core.Access;
using KvmStorage.Core.Domains;
using KvmStorage.Core.Errors;
using KvmStorage.Core.Pools;
using KvmStorage.Core.Volumes;

namespace KvmStorage.Infrastructure;

/// <summary>
/// What one object piped into a volume cmdlet names, decided by its type and never by a partial match of properties:
/// a volume (a volume object, a VM disk's image, a snapshot's volume, a file, a record with Pool and Name or Path), a
/// name (a string without '/'; one with '/' is a path), or a whole pool (a pool object, where the cmdlet lists). Anything else, and an object that names a
/// pool but no volume, is refused: binding by property name never widens to a whole pool.
/// </summary>
internal static class VolumeInput
{
    /// <summary>One interpretation: exactly one of the three is set.</summary>
    internal sealed record Item(VolumeSpec? Volume, string? Name, StoragePool? Pool);

    public static Item Interpret(object? input, Func<string, string> resolveProviderPath)
    {
        object? value = input is PSObject ps ? ps.BaseObject : input;
        switch (value)
        {
            case StorageVolume volume:
                return new Item(VolumeSpec.Of(volume), null, null);
            case VMDisk disk:
                return new Item(new VolumeReference(disk).ToSpec(resolveProviderPath), null, null);
            case Core.Volumes.VolumeSnapshot snapshot:
                return new Item(VolumeSpec.Of(snapshot), null, null);
            case FileInfo file:
                return new Item(new VolumeSpec.AtLocalPath(file.FullName), null, null);
            case StoragePool pool:
                return new Item(null, null, pool);
            case string typed when typed.Contains('/', StringComparison.Ordinal):
                // A volume name never holds a '/': this is a path (host view, or local under the root).
                return new Item(new VolumeSpec.AtPath(typed, resolveProviderPath(typed)), null, null);
            case string name:
                return new Item(null, name, null);
            case DirectoryInfo directory:
                throw new KvmStorageException(ErrorKind.InvalidArgument, VolumeErrorIds.NotAVolume, $"'{directory.FullName}' is a folder, not an image file.", directory.FullName);
        }

        // Records (Import-Csv, hashtables, objects of other modules): Pool and Name, or Path; nothing less.
        PSObject record = input as PSObject ?? PSObject.AsPSObject(value ?? string.Empty);
        Func<string, string?> property = value is System.Collections.IDictionary dictionary
            ? key => dictionary.Contains(key) && dictionary[key]?.ToString() is { Length: > 0 } text ? text : null
            : key => record.Properties[key]?.Value?.ToString() is { Length: > 0 } text ? text : null;

        string? poolName = property("Pool") ?? property("PoolName");
        string? volumeName = property("Name") ?? property("VolumeName");
        string? path = property("Path") ?? property("FullName");
        if (poolName is not null && volumeName is not null)
        {
            return new Item(new VolumeSpec.InPool(poolName, volumeName), null, null);
        }

        if (path is not null)
        {
            return new Item(new VolumeSpec.AtPath(path, resolveProviderPath(path)), null, null);
        }

        string what = poolName is not null
            ? $"names pool '{poolName}' but no volume (a Name or Path property); it is not taken for the whole pool"
            : "has neither Pool and Name nor Path properties";
        throw new KvmStorageException(ErrorKind.InvalidArgument, AccessErrorIds.VolumeNotNamed, $"The input object ({value?.GetType().Name ?? "null"}) {what}.", value);
    }
}
