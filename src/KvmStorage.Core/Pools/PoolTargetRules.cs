using KvmStorage.Core.Errors;
using KvmStorage.Core.IO;

namespace KvmStorage.Core.Pools;

/// <summary>
/// The rules of a pool's target that both backends apply before libvirt or the files see a definition: libvirt's
/// own refusals, made earlier and more precisely, and permissions applied to an existing folder.
/// </summary>
internal static class PoolTargetRules
{
    /// <summary>A target path must be absolute, without '.' or '..' parts (libvirt's own rule, checked before anything is written).</summary>
    internal static void Validate(PoolDefinition definition)
    {
        string? target = definition.TargetPath;
        if (definition.Type.HasTarget() && string.IsNullOrEmpty(target))
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, ErrorIds.InvalidTargetPath, $"A {definition.Type.ToXmlName()} pool needs a target path.", definition.Name);
        }

        if (target is not null && (!target.StartsWith('/') || target.Any(char.IsControl) || target.Split('/').Any(p => p is ".." or ".")))
        {
            throw new KvmStorageException(ErrorKind.InvalidArgument, ErrorIds.InvalidTargetPath, $"The target path '{PoolNames.Printable(target)}' must be an absolute path without '.' or '..' parts.", definition.Name);
        }
    }

    /// <summary>Refuses a definition whose target folder or source another pool already uses (libvirt's "Storage source conflict").</summary>
    internal static void CheckConflicts(PoolDefinition definition, IEnumerable<StoragePool> others)
    {
        string? target = definition.TargetPath is null ? null : Path.TrimEndingDirectorySeparator(definition.TargetPath);
        PoolSource source = definition.Source;
        foreach (StoragePool pool in others)
        {
            if (pool.Name == definition.Name)
            {
                continue;
            }

            if (target is not null && definition.Type.HoldsFileVolumes() && pool.PoolType.HoldsFileVolumes() && pool.Path is not null && Path.TrimEndingDirectorySeparator(pool.Path) == target)
            {
                throw new KvmStorageException(ErrorKind.AlreadyExists, PoolErrorIds.PoolTargetInUse, $"Pool '{pool.Name}' already uses the target path '{pool.Path}'.", definition.Name);
            }

            // libvirt's "Storage source conflict": the same network export, device or named source.
            bool sameSource = pool.PoolType == definition.Type && !source.IsEmpty && pool.Source.ToString() == source.ToString();
            if (sameSource)
            {
                throw new KvmStorageException(ErrorKind.AlreadyExists, PoolErrorIds.PoolTargetInUse, $"Pool '{pool.Name}' already uses the source '{source}'.", definition.Name);
            }
        }
    }

    /// <summary>Sets a pool folder's mode and owner as the definition's <c>&lt;permissions&gt;</c> give them (unset parts are left alone).</summary>
    internal static void ApplyPermissions(string directory, Permissions permissions)
    {
        if (permissions.Mode is { } mode)
        {
            File.SetUnixFileMode(directory, mode);
        }

        PosixFile.SetOwner(directory, permissions.Owner ?? -1, permissions.Group ?? -1);
    }
}
